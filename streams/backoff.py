"""Exponential backoff for background retries, so a long outage costs a log line per interval,
not per second. Pure: the clock is injected, so tests step through an outage instantly."""

from __future__ import annotations

import time
from collections.abc import Callable


class Backoff:
    """``failed()`` doubles the wait (from ``first_s`` up to ``cap_s``); ``succeeded()`` resets it;
    ``due()`` says whether the next attempt may run now."""

    def __init__(self, first_s: float = 1.0, cap_s: float = 300.0, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not 0 < first_s <= cap_s:
            raise ValueError(f"backoff needs 0 < first_s <= cap_s; got first_s={first_s}, cap_s={cap_s}")
        self.first_s = first_s
        self.cap_s = cap_s
        self._clock = clock
        self._delay = 0.0
        self._next = float("-inf")

    def due(self) -> bool:
        return self._clock() >= self._next

    def failed(self) -> float:
        """Record a failure; the seconds until the next attempt."""
        self._delay = min(self.cap_s, self._delay * 2 if self._delay else self.first_s)
        self._next = self._clock() + self._delay
        return self._delay

    def succeeded(self) -> None:
        self._delay = 0.0
        self._next = float("-inf")
