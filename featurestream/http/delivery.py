"""Kafka delivery reports of PutRecord and DeleteRecord, resolved on the event loop in batches.

The producer's delivery thread (``streams.publisher``) runs one callback per record it hears
back about. Waking the event loop once per record (a concurrent Future wrapped for asyncio) costs
a self-pipe write and a loop iteration each; here the callbacks only queue their outcome, and the
first one of a burst schedules a single drain, which resolves every queued put's future in one
loop callback. So many puts in flight share one poll of the producer and one wake-up.

A future resolves to (partition, offset) only when the broker acknowledged the record (the
producer is idempotent with ``acks=all``); a record the broker refused or that timed out fails
its future with the publisher's error, which the API answers as an error, never 200.

The producer fails a record itself once its delivery timeout has passed, so a report always comes;
the bound here only catches one that never does. Rather than a timer per put (``asyncio.wait_for``
made and cancelled one for every request), every future waits in one queue in the order it was
made: all share the same timeout, so the queue is in deadline order too, and one sweep a second
fails those past it with :class:`DeliveryOverdue` (at most a sweep late) and drops the settled.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

Outcome = tuple[asyncio.Future, Exception | None, tuple[int, int] | None]
SWEEP_S = 1.0
# Settled futures behind an unsettled one wait in the queue for it; past this many the sweep drops
# them all at once, so a report that is slow to come cannot make the queue hold every put since.
_COMPACT_AT = 10_000


class DeliveryOverdue(Exception):  # noqa: N818 - the name says what happened, like TimeoutError
    """No delivery report came for a record within the bound given to :class:`LoopDeliveries`."""


class LoopDeliveries:
    """Delivery callbacks (any thread) -> asyncio futures of ``loop``, one loop wake-up per batch; a
    future with no report ``timeout_s`` after it was made fails with :class:`DeliveryOverdue`."""

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout_s: float, *, sweep_s: float = SWEEP_S) -> None:
        self._loop = loop
        self._timeout_s = timeout_s
        self._sweep_s = sweep_s
        self._ready: deque[Outcome] = deque()
        self._scheduled = False
        self._waiting: deque[tuple[float, asyncio.Future]] = deque()  # (deadline, future), oldest first
        self._sweep: asyncio.TimerHandle | None = None
        self.wakeups = 0  # loop callbacks that settled reports (fewer than reports when they share one)

    def expect(self) -> tuple[asyncio.Future, Callable[[Exception | None, tuple[int, int] | None], None]]:
        """A future for one record and the callback (``Publisher.try_produce``'s) that settles it.
        Called on the loop's thread."""
        loop = self._loop
        future = loop.create_future()
        self._waiting.append((loop.time() + self._timeout_s, future))
        if self._sweep is None:
            self._sweep = loop.call_later(self._sweep_s, self._overdue)
        ready = self._ready

        def on_delivery(error: Exception | None, coordinates: tuple[int, int] | None) -> None:
            ready.append((future, error, coordinates))  # deque.append is atomic: no lock needed
            if not self._scheduled:
                # A drain that is already scheduled has not set the flag back yet, so it will
                # find this outcome; one that cleared it will be followed by this new one.
                self._scheduled = True
                try:
                    loop.call_soon_threadsafe(self._drain)
                except RuntimeError:  # the loop is closed (the worker is stopping): nobody waits
                    pass

        return future, on_delivery

    @property
    def waiting(self) -> int:
        """Futures in the deadline queue (settled ones leave it at the next sweep)."""
        return len(self._waiting)

    def _drain(self) -> None:
        self._scheduled = False  # before popping: an outcome queued from now on schedules another drain
        self.wakeups += 1
        ready = self._ready
        while ready:
            future, error, coordinates = ready.popleft()
            if future.done():  # its request gave up waiting (client gone) or it was overdue
                continue
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(coordinates)

    def _overdue(self) -> None:
        """Fail the futures past their deadline, drop the settled ones, and sweep again while any wait."""
        now = self._loop.time()
        waiting = self._waiting
        while waiting:
            deadline, future = waiting[0]
            if not future.done():
                if deadline > now:
                    break
                future.set_exception(DeliveryOverdue(f"no delivery report within {self._timeout_s:g} s"))
            waiting.popleft()
        if len(waiting) > _COMPACT_AT:
            self._waiting = waiting = deque(entry for entry in waiting if not entry[1].done())
        self._sweep = self._loop.call_later(self._sweep_s, self._overdue) if waiting else None


__all__ = ["SWEEP_S", "DeliveryOverdue", "LoopDeliveries"]
