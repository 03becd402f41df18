"""The HTTP endpoint of the processor and the sink: ``/metrics``, ``/health`` and ``/ready``.

One small stdlib server in a daemon thread (prometheus_client's ``start_http_server``
serves only metrics, and dies with a traceback when its port is taken):

- ``/metrics``: the Prometheus exposition of this process's registry;
- ``/health``: 200 while the process is alive (liveness);
- ``/ready``: 200 when the worker's readiness callback says so, else 503, with a JSON body
  ``{"status", "reason", "partitions"}`` whose reason never names a backend (the endpoint is
  unauthenticated; see ``streams/health.py``).

Several workers on one host must not collide: when the requested port is taken, the server
binds a free port instead and logs one line naming it (issue "Trust the data", item 5), and
``bound_port`` tells the caller which, so it can publish it (``featurestream status``).
"""

from __future__ import annotations

import errno
import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from streams.health import Readiness

log = logging.getLogger("featurestream.metrics")

ReadyCheck = Callable[[], Readiness]


class MetricsServer:
    """A running server; ``port`` is the one actually bound."""

    def __init__(self, server: ThreadingHTTPServer, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread

    @property
    def host(self) -> str:
        return str(self._server.server_address[0])

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


def serve_metrics(port: int, host: str = "127.0.0.1", *, ready: ReadyCheck | None = None,
                  role: str = "worker") -> MetricsServer:
    """Serve /metrics, /health and /ready on ``host:port`` (a free port if that one is taken)."""
    handler = _handler_for(ready)
    try:
        server = _Server((host, port), handler)
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE or port == 0:
            raise
        server = _Server((host, 0), handler)
        log.warning("%s: metrics port %d is taken (another worker on this host?); serving /metrics, "
                    "/health and /ready on %s:%d instead", role, port, host, server.server_address[1])
    thread = threading.Thread(target=server.serve_forever, name=f"{role}-metrics", daemon=True)
    thread.start()
    return MetricsServer(server, thread)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # SO_REUSEADDR (HTTPServer's default) only skips TIME_WAIT; a live listener still makes
    # bind() fail with EADDRINUSE, which is what the fallback relies on.
    allow_reuse_address = True


def _handler_for(ready: ReadyCheck | None) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, generate_latest(REGISTRY), CONTENT_TYPE_LATEST)
            elif path == "/health":
                self._json(200, {"status": "ok"})
            elif path == "/ready":
                state = ready() if ready is not None else Readiness(True, "no readiness check", 0)
                self._json(200 if state.ready else 503,
                           {"status": "ready" if state.ready else "not ready", "reason": state.reason,
                            "partitions": state.partitions})
            else:
                self._json(404, {"status": "not found", "paths": ["/metrics", "/health", "/ready"]})

        def _json(self, status: int, body: dict[str, object]) -> None:
            self._send(status, json.dumps(body).encode(), "application/json")

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - http.server's signature
            pass  # probes hit this every few seconds; access logs would drown the worker's own

    return Handler
