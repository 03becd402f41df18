"""``GET /ready``: do Kafka and Redis answer? Said without saying where they are, and cheap to ask.

``/ready`` is unauthenticated (probes cannot sign), so:
- its answer names no address, URL or driver error: ``{"redis": "unavailable"}``; the details go
  to the server log, once per cause and period (``quiet_log``);
- one check per backend runs at a time and every caller waits on it: a flood of probes while a
  backend is down must not pile blocked calls into the worker's thread pool (a Kafka check holds
  the registry's lock for its whole timeout, and requests need that lock too);
- the checks run on threads of their own (``app.Server.probes``, one per backend), so a check
  stuck on a stalled Redis never holds a thread the control plane or a request needs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from featurestream.http.quiet_log import log_unavailable

READY_TIMEOUT_S = 5.0


class Readiness:
    def __init__(self, checks: Mapping[str, tuple[Callable[[], Any], str]],
                 run: Callable[[Callable[[], Any]], Awaitable[Any]], *, timeout_s: float = READY_TIMEOUT_S) -> None:
        """``checks``: name -> (blocking check, where it points, for the log); ``run`` runs a
        blocking call off the event loop."""
        self._checks = checks
        self._run = run
        self._timeout_s = timeout_s
        self._running: dict[str, asyncio.Future[Any]] = {}

    async def answer(self) -> tuple[int, dict[str, str]]:
        """(HTTP status, body) of /ready."""
        results: dict[str, str] = {}
        for name, (check, where) in self._checks.items():
            try:
                await asyncio.wait_for(asyncio.shield(self._start(name, check)), timeout=self._timeout_s)
                results[name] = "ok"
            except TimeoutError:
                log_unavailable(name, f"no answer within {self._timeout_s:g} s from {where}", "/ready")
                results[name] = "unavailable"
            except Exception as exc:
                log_unavailable(name, str(exc) or f"{type(exc).__name__} from {where}", "/ready")
                results[name] = "unavailable"
        ok = all(v == "ok" for v in results.values())
        return (200 if ok else 503), {"status": "ready" if ok else "not ready", **results}

    def _start(self, name: str, check: Callable[[], Any]) -> asyncio.Future[Any]:
        running = self._running.get(name)
        if running is None or running.done():
            running = asyncio.ensure_future(self._run(check))
            # Retrieved here so a check that every caller stopped waiting for logs no
            # "exception was never retrieved" when it finally fails.
            running.add_done_callback(lambda f: f.cancelled() or f.exception())
            self._running[name] = running
        return running


__all__ = ["READY_TIMEOUT_S", "Readiness"]
