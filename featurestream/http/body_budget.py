"""How many bytes of request bodies one worker holds at once, and refusing a request that would pass it.

A body's size is bounded (``--max-body-bytes``) and so is its arrival time (``--body-timeout``), but
not how many arrive together: 150 clients each sending half of a 2 MiB body would make a worker
hold 150 x 2 MiB. So each request reserves its body's size (its Content-Length, or the largest body
accepted when it is chunked) before a byte of it is read, and gives it back when it is answered,
since the body (and what was parsed from it) lives that long.

A request that does not fit is refused at once, not queued: 503 with ``ThrottlingException``, which
every AWS SDK retries with backoff on its own. Queuing was the other choice. It was not taken
because a queue lets whoever fills the budget (a slow sender, or many) also decide how long everyone
else waits. Each waiter would still hold a connection and a handler, and the time spent waiting
would have to come out of the body timeout or add to it. A refusal costs one small answer and holds
nothing; the refused body is never read into memory (aiohttp reads and drops what follows for a
moment, so the client can read the answer, then closes).
"""

from __future__ import annotations

from featurestream.http.errors import ApiError

THROTTLED = "ThrottlingException"


class BodyBudget:
    """The bytes of request bodies a worker may hold at once (one per worker: the event loop is its
    only user, so no lock)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.held = 0

    def reserve(self, size: int) -> Reservation:
        """Reserve ``size`` bytes, or raise ApiError 503 ThrottlingException naming the limit."""
        if size > 0 and self.held + size > self.capacity:
            raise ApiError(THROTTLED, f"Rate exceeded: this worker is receiving {self.held} bytes of request "
                           f"bodies and a body of {size} more would pass its limit of {self.capacity} "
                           "(--max-body-in-flight-bytes); retry with backoff", 503)
        self.held += size
        return Reservation(self, size)


class Reservation:
    """Bytes held for one request; ``release`` (or leaving the ``with`` block) gives them back once."""

    def __init__(self, budget: BodyBudget, size: int) -> None:
        self._budget = budget
        self.size = size

    def release(self) -> None:
        self._budget.held -= self.size
        self.size = 0

    def __enter__(self) -> Reservation:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.release()


__all__ = ["THROTTLED", "BodyBudget", "Reservation"]
