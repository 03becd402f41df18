"""Is a long-running worker (processor or sink) alive, and ready? The rule, without I/O.

The worker's loop reports what it does (``joined`` after a rebalance, ``beat`` on every
poll or loop pass, ``failing``/``recovered`` around retries), and the metrics server asks
:meth:`WorkerHealth.readiness` on every ``/ready``. Ready means:

- the worker has joined its consumer group (a rebalance completed; the assignment may be
  empty when there are more workers than partitions: such a member is an idle standby, and
  stays ready so that a rollout or a PodDisruptionBudget is not blocked by it). A sink whose
  subscription matches no topic yet (a fresh install without feature groups) never joins;
  it reports ``joined(0)`` itself once it has seen that there is nothing to consume;
- its loop ran within ``max_silence_s`` (30 s by default): a consumer stuck in a long
  rebalance, a dead event loop or a flush that hangs turns it not ready;
- its last attempt to apply records did not fail (Redis or S3 down, a commit refused):
  while it retries it is not ready, and says so without naming any backend address.

The reasons are fixed phrases: ``/ready`` is unauthenticated, so it must not show hosts,
URLs or exception text (those go to the log).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

DEFAULT_MAX_SILENCE_S = 30.0


@dataclass(frozen=True)
class Readiness:
    ready: bool
    reason: str
    partitions: int


class WorkerHealth:
    """Thread-safe state the worker's loop writes and the HTTP thread reads."""

    def __init__(self, *, max_silence_s: float = DEFAULT_MAX_SILENCE_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_silence_s = max_silence_s
        self._clock = clock
        self._lock = threading.Lock()
        self._joined = False
        self._partitions = 0
        self._last_beat: float | None = None
        self._failure: str | None = None

    def joined(self, partitions: int) -> None:
        """A rebalance gave this worker ``partitions`` partitions (0 is a valid answer)."""
        with self._lock:
            self._joined = True
            self._partitions = partitions
            self._last_beat = self._clock()

    @property
    def is_joined(self) -> bool:
        with self._lock:
            return self._joined

    def left(self) -> None:
        """Partitions were revoked: a rebalance is under way until the next ``joined``."""
        with self._lock:
            self._joined = False
            self._partitions = 0

    def beat(self) -> None:
        """The worker's loop is turning (a poll returned, a loop pass ran)."""
        with self._lock:
            self._last_beat = self._clock()

    def failing(self, what: str) -> None:
        """Applying records failed and is being retried; ``what`` is a fixed, address-free phrase."""
        with self._lock:
            self._failure = what

    def recovered(self) -> None:
        with self._lock:
            self._failure = None

    def readiness(self) -> Readiness:
        with self._lock:
            joined, partitions, beat, failure = self._joined, self._partitions, self._last_beat, self._failure
        if not joined:
            return Readiness(False, "not yet assigned partitions by its consumer group", partitions)
        if beat is None or self._clock() - beat > self.max_silence_s:
            return Readiness(False, f"its loop has not run for more than {self.max_silence_s:.0f} s", partitions)
        if failure is not None:
            return Readiness(False, failure, partitions)
        return Readiness(True, "assigned and consuming", partitions)
