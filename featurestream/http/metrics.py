"""Prometheus metrics of the HTTP API: requests by operation and status, and latency.

With several worker processes the counters are kept in prometheus_client's multiprocess
files (the directory is set up by ``server.py`` before any metric exists), so a scrape of
any worker shows the sum over all of them.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

# A client that closed its connection before the answer: nginx's code for it, so dashboards that
# alert on 5xx never see a client's doing, and a flood of such clients is visible on its own.
CLIENT_CLOSED = "499"
_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)


class HttpMetrics:
    def __init__(self, multiprocess_dir: str | None = None) -> None:
        self.registry = CollectorRegistry()
        self._multiprocess_dir = multiprocess_dir
        # In multiprocess mode the values live in files; the metrics must not be registered
        # with a registry (the collector reads the files instead).
        target = None if multiprocess_dir else self.registry
        self.requests = Counter("featurestream_http_requests", "HTTP API requests by operation and status",
                                ["operation", "status"], registry=target)
        self.seconds = Histogram("featurestream_http_request_seconds", "HTTP API request latency",
                                 ["operation"], buckets=_BUCKETS, registry=target)
        # Connections the fast lane gave to aiohttp's server (fast_lane.py): the SDKs' requests never need
        # it, so a count that grows with the traffic says some client's requests take the slower lane.
        self.handovers = Counter("featurestream_http_connections_handed_over",
                                 "connections the fast lane handed to aiohttp's server", registry=target)
        if multiprocess_dir:
            MultiProcessCollector(self.registry, path=multiprocess_dir)
        self._counters: dict[tuple[str, int | str], Any] = {}
        self._histograms: dict[str, Any] = {}

    def observe(self, operation: str, status: int | str, seconds: float) -> None:
        # The labelled children, looked up once each: ``labels()`` checks and joins its arguments under a
        # lock on every call, ~3 % of a worker's time per request.
        key = (operation, status)
        counter = self._counters.get(key)
        if counter is None:
            counter = self._counters[key] = self.requests.labels(operation, str(status))
        histogram = self._histograms.get(operation)
        if histogram is None:
            histogram = self._histograms[operation] = self.seconds.labels(operation)
        counter.inc()
        histogram.observe(seconds)

    def connection_handed_over(self) -> None:
        self.handovers.inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
