"""Kafka delivery reports of PutRecord and DeleteRecord, resolved on the event loop in batches.

The producer's delivery thread (``streams.publisher``) runs one callback per record it hears
back about. Waking the event loop once per record (a concurrent Future wrapped for asyncio) costs
a self-pipe write and a loop iteration each; here the callbacks only queue their outcome, and the
first one of a burst schedules a single drain, which resolves every queued put's future in one
loop callback. So many puts in flight share one poll of the producer and one wake-up.

A future resolves to (partition, offset) only when the broker acknowledged the record (the
producer is idempotent with ``acks=all``); a record the broker refused or that timed out fails
its future with the publisher's error, which the API answers as an error, never 200.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

Outcome = tuple[asyncio.Future, Exception | None, tuple[int, int] | None]


class LoopDeliveries:
    """Delivery callbacks (any thread) -> asyncio futures of ``loop``, one loop wake-up per batch."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._ready: deque[Outcome] = deque()
        self._scheduled = False
        self.wakeups = 0  # loop callbacks that settled reports (fewer than reports when they share one)

    def expect(self) -> tuple[asyncio.Future, Callable[[Exception | None, tuple[int, int] | None], None]]:
        """A future for one record and the callback (``Publisher.try_produce``'s) that settles it."""
        future = self._loop.create_future()
        ready = self._ready

        def on_delivery(error: Exception | None, coordinates: tuple[int, int] | None) -> None:
            ready.append((future, error, coordinates))  # deque.append is atomic: no lock needed
            if not self._scheduled:
                # A drain that is already scheduled has not set the flag back yet, so it will
                # find this outcome; one that cleared it will be followed by this new one.
                self._scheduled = True
                try:
                    self._loop.call_soon_threadsafe(self._drain)
                except RuntimeError:  # the loop is closed (the worker is stopping): nobody waits
                    pass

        return future, on_delivery

    def _drain(self) -> None:
        self._scheduled = False  # before popping: an outcome queued from now on schedules another drain
        self.wakeups += 1
        ready = self._ready
        while ready:
            future, error, coordinates = ready.popleft()
            if future.done():  # its request gave up waiting (timeout, client gone)
                continue
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(coordinates)


__all__ = ["LoopDeliveries"]
