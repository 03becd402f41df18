"""Exponential backoff, written once: the waits between retries of anything that may be away for a while
(Kafka commits, Redis, the Iceberg catalog, a record not yet visible online).

The schedule is pure (``backoff_delays``: first, then doubling up to a cap; optional jitter; optional
deadline on an injected clock), so tests step through an outage instantly. ``Backoff`` keeps a schedule's
state for loops that retry in the background and reset on success. It sits on the lowest floor because
every floor retries (``sinks`` may not import ``streams``).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator


def backoff_delays(first_s: float, cap_s: float, *, jitter: bool = False, until: float | None = None,
                   clock: Callable[[], float] = time.monotonic,
                   rand: Callable[[], float] = random.random) -> Iterator[float]:
    """Seconds to wait before each retry: ``first_s``, then each wait doubled, at most ``cap_s``.

    ``jitter``: each wait is stretched by a random factor in [1, 2), so writers that conflicted together
    do not retry together. ``until``: no more waits once ``clock()`` has passed it (the caller gives up).
    """
    if first_s < 0 or cap_s < 0:
        raise ValueError(f"backoff needs waits >= 0; got first_s={first_s}, cap_s={cap_s}")
    delay = first_s
    while until is None or clock() <= until:
        yield delay * (1 + rand()) if jitter else delay
        delay = min(cap_s, delay * 2)


class Backoff:
    """``failed()`` gives the next wait of the schedule (``first_s`` doubling up to ``cap_s``);
    ``succeeded()`` starts the schedule over; ``due()`` says whether the next attempt may run now."""

    def __init__(self, first_s: float = 1.0, cap_s: float = 300.0, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not 0 <= first_s <= cap_s:
            raise ValueError(f"backoff needs 0 <= first_s <= cap_s; got first_s={first_s}, cap_s={cap_s}")
        self.first_s = first_s
        self.cap_s = cap_s
        self._clock = clock
        self._delays = backoff_delays(first_s, cap_s)
        self._delay = 0.0
        self._next = float("-inf")

    @property
    def delay(self) -> float:
        """The last wait ``failed()`` gave (0 after a success)."""
        return self._delay

    def due(self) -> bool:
        return self._clock() >= self._next

    def failed(self) -> float:
        """Record a failure; the seconds until the next attempt."""
        self._delay = next(self._delays)
        self._next = self._clock() + self._delay
        return self._delay

    def succeeded(self) -> None:
        self._delays = backoff_delays(self.first_s, self.cap_s)
        self._delay = 0.0
        self._next = float("-inf")
