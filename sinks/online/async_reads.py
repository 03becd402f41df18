"""Online-store reads on an event loop (redis-py's asyncio client), for the HTTP API.

The blocking :class:`~sinks.online.store.OnlineStore` needs a thread per read in flight; here a
read is a coroutine, so many requests' round trips overlap on one loop and a Redis that stops
answering holds no thread, only the coroutines waiting on it (each for the socket timeout, after
which the read fails with ServiceUnavailableError naming Redis).

Everything but the I/O is shared with the blocking store (``reads.py``, and ``aggregates.py`` for
aggregation groups), so answers, expiry, errors and messages are identical.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import redis

from schemas.errors import ServiceUnavailableError
from schemas.group import FeatureGroup
from sinks.online.aggregates import AggregateReads
from sinks.online.connect import DEFAULT_TIMEOUT_S, AsyncRedisClient, connect_async, redact_url
from sinks.online.reads import (
    add_aggregates,
    check_get,
    decode_batch,
    fetch,
    plan_batch,
    plan_get,
    queue_batch,
    service,
    shape,
    split_aggregates,
)
from sinks.online.results import BatchGetResult

# Round trips in flight at once per reader (one reader per HTTP worker): far more than the cores that
# could use them, yet a flood of reads, or a stalled Redis, never opens a connection per request.
MAX_IN_FLIGHT = 64


class AsyncOnlineReads:
    """GetRecord and BatchGetRecord of the online store under ``prefix``, as coroutines.

    Use it from one event loop only (its connections belong to the loop that opened them).
    """

    def __init__(self, client: AsyncRedisClient, prefix: str, *, where: str, timeout_s: float = DEFAULT_TIMEOUT_S,
                 max_in_flight: int = MAX_IN_FLIGHT) -> None:
        self._client = client
        self._prefix = prefix
        self._where = where
        self._timeout_s = timeout_s
        self._max_in_flight = max_in_flight
        self._slots = asyncio.Semaphore(max_in_flight)
        self._aggregates = AggregateReads(prefix)

    @classmethod
    def from_url(cls, url: str, prefix: str, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> AsyncOnlineReads:
        """A reader for ``url`` (the forms of :func:`sinks.online.connect.connect`); connects on first use."""
        return cls(connect_async(url, timeout_s=timeout_s), prefix, where=redact_url(url), timeout_s=timeout_s)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def get_record(self, group: FeatureGroup, record_id: str, features: Sequence[str] | None = None, *,
                         with_expires_at: bool = False, now_ns: int | None = None) -> dict[str, Any] | None:
        """As :meth:`OnlineStore.get_record <sinks.online.store.OnlineStore.get_record>`."""
        rid, names = check_get(group, record_id, features)
        if group.is_aggregation:  # computed at read time from its tiles
            found = (await self._aggregate_records(group, [rid], names, now_ns))[0]
            return shape(None if found is None else (found, None), with_expires_at)
        read = plan_get(self._prefix, group, rid, names)
        await self._slot(read.action)
        try:
            with service(self._where, read.action):
                raw = await fetch(self._client, read.key, names)
        except redis.ResponseError as exc:
            raise read.refused(exc) from exc
        finally:
            self._slots.release()
        return read.answer(raw, now_ns, with_expires_at)

    async def batch_get(self, requests: Sequence[tuple[FeatureGroup, Sequence[str], Sequence[str] | None]], *,
                        now_ns: int | None = None) -> BatchGetResult:
        """As :meth:`OnlineStore.batch_get <sinks.online.store.OnlineStore.batch_get>`; the aggregation
        groups' reads and the plain records' pipeline run at the same time."""
        result = BatchGetResult()
        plan, aggregate_reads = split_aggregates(plan_batch(requests, result))
        reads = [self._aggregate_records(group, ids, names, now_ns) for group, ids, names in aggregate_reads]
        if plan:
            reads.append(self._plain(plan))
        outcomes = await asyncio.gather(*reads, return_exceptions=True)
        for (group, ids, _names), outcome in zip(aggregate_reads, outcomes, strict=False):
            add_aggregates(group, ids, outcome, result)
        if plan:
            replies = outcomes[-1]
            if isinstance(replies, BaseException):
                raise replies  # Redis did not answer: nothing read can be told apart from missing
            decode_batch(plan, replies, now_ns, result)
        return result

    async def _plain(self, plan: list[Any]) -> list[Any]:
        pipe = self._client.pipeline(transaction=False)
        queue_batch(pipe, self._prefix, plan)
        return await self._execute(pipe, f"read {len(plan)} records", raise_on_error=False)

    async def _aggregate_records(self, group: FeatureGroup, keys: list[str], names: tuple[str, ...] | None,
                                 now_ns: int | None) -> list[dict[str, Any] | None]:
        read = self._aggregates.read(group, keys, names, now_ns=now_ns)
        pipe = self._client.pipeline(transaction=False)
        read.queue(pipe)
        return read.decode(await self._execute(pipe, read.action))

    async def _execute(self, pipe: Any, action: str, *, raise_on_error: bool = True) -> list[Any]:
        await self._slot(action)
        try:
            with service(self._where, action):
                return await pipe.execute(raise_on_error=raise_on_error)
        finally:
            self._slots.release()

    async def _slot(self, action: str) -> None:
        """Take one of the round trips allowed in flight; when all are taken (a flood, or a stalled Redis
        holding them), wait at most the Redis timeout for one, then fail as a read that timed out."""
        if not self._slots.locked():
            await self._slots.acquire()  # does not wait: the common case costs no timer
            return
        try:
            async with asyncio.timeout(self._timeout_s):
                await self._slots.acquire()
        except TimeoutError:
            raise ServiceUnavailableError(
                f"Redis at {self._where} did not answer while trying to {action} (all {self._max_in_flight} "
                f"round trips allowed at once were still waiting on it after {self._timeout_s:g} s)") from None


__all__ = ["AsyncOnlineReads"]
