"""A log line per cause, not per request: a backend that is down must not let clients flood the log.

``/ready`` is unauthenticated and every request to a server whose Redis is down fails the same
way; logging each would let anyone who can reach the port fill the disk. The first occurrence
of a message is logged at once, repeats within ``every_s`` are counted, and the count is logged
with the next occurrence after that.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

MAX_KEYS = 256  # distinct causes remembered; beyond that the oldest is forgotten


class QuietLog:
    def __init__(self, logger: logging.Logger, *, every_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._logger = logger
        self._every_s = every_s
        self._clock = clock
        self._lock = threading.Lock()  # checks run in the worker's thread pool too
        self._last: dict[str, tuple[float, int]] = {}  # key -> (when logged, repeats since)

    def warning(self, key: str, message: str, *args: object) -> bool:
        """Log ``message`` unless ``key`` was logged less than ``every_s`` ago; True if logged."""
        now = self._clock()
        with self._lock:
            logged_at, repeats = self._last.get(key, (None, 0))
            if logged_at is not None and now - logged_at < self._every_s:
                self._last[key] = (logged_at, repeats + 1)
                return False
            if len(self._last) >= MAX_KEYS and key not in self._last:
                self._last.pop(next(iter(self._last)))
            self._last[key] = (now, 0)
        suffix = f" (and {repeats} more times since it was last logged)" if repeats else ""
        self._logger.warning(message + suffix, *args)
        return True




_SHARED = QuietLog(logging.getLogger("featurestream.http"), every_s=10.0)


def log_unavailable(backend: str, detail: BaseException | str, where: str) -> None:
    """Log why ``backend`` failed (address, driver error: what clients are not told), quietly."""
    _SHARED.warning(f"{backend}:{where}", "%s unavailable (%s): %s", backend, where, str(detail)[:1000])


__all__ = ["QuietLog", "log_unavailable"]
