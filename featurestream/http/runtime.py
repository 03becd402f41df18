"""The runtime operations of SageMaker Feature Store over featurestream's SDK pieces.

Puts and deletes pass the same validator and the same Kafka publisher as
``FeatureStore.put_record``; reads go to the same online store, through redis-py's asyncio client
(``sinks.online.async_reads``): the round trips of many requests overlap on the event loop, and a
Redis that stops answering holds no thread, only the reads waiting on it, each for the server's
Redis timeout. Blocking calls (a registry read for a group this worker does not know yet, a topic
check, a full producer queue) run in the server's thread pool, never on the event loop. A put
waits for Kafka's acknowledgement as an asyncio future, settled with the other puts' reports in one
loop wake-up (``delivery.py``), so a slow broker holds no thread.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any, TypeVar

from featurestream.http.batch_get import BoundedBatchGet
from featurestream.http.delivery import DeliveryOverdue, LoopDeliveries
from featurestream.http.errors import ApiError, backend_of, from_exception
from featurestream.http.limits import DEFAULT_MAX_RESPONSE_BYTES
from featurestream.http.quiet_log import log_unavailable
from featurestream.http.records import (
    event_time_from_wire,
    group_name,
    record_from_wire,
    record_id,
    record_to_wire,
    string_list,
    ttl_seconds,
)
from featurestream.sdk import FeatureStore
from schemas.errors import FeatureStoreError, RecordValidationError, ServiceUnavailableError
from schemas.group import FeatureGroup
from schemas.messages import HARD_DELETE, SOFT_DELETE, Message
from schemas.validate import compile_validator, validate_delete
from schemas.wire import encode
from sinks.online.async_reads import AsyncOnlineReads
from sinks.online.connect import DEFAULT_TIMEOUT_S
from streams.group_view import GroupView
from streams.publisher import REPORT_GRACE_S

T = TypeVar("T")
log = logging.getLogger("featurestream.http")
MAX_BATCH_WRITE_ENTRIES = 25
_EXPIRATION = ("Enabled", "Disabled")


def _one(query: dict[str, list[str]], key: str, *, required: bool = False) -> str | None:
    values = query.get(key)
    if not values:
        if required:
            raise ApiError.validation(f"1 validation error detected: Value null at '{key}' failed to satisfy "
                                      "constraint: Member must not be null")
        return None
    if len(values) > 1:
        raise ApiError.validation(f"query parameter {key} is given {len(values)} times; give it once")
    return values[0]


def _expiration(value: Any) -> bool:
    if value is None:
        return False
    if value not in _EXPIRATION:
        raise ApiError.validation(f"ExpirationTimeResponse {str(value)[:40]!r} is not Enabled or Disabled")
    return value == "Enabled"


class _WouldWait(Exception):  # noqa: N818 - a signal, not an error: "do this in the thread pool"
    """An inline write needs something that waits (a registry read, a topic check, a full queue)."""


class RuntimeApi:
    """PutRecord, GetRecord, BatchGetRecord, DeleteRecord, BatchWriteRecord."""

    def __init__(self, store: FeatureStore, groups: GroupView, executor: Executor, *,
                 max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
                 inline_writes: bool = True) -> None:
        self.store = store
        self.groups = groups
        self.executor = executor
        self.inline_writes = inline_writes
        self._batch_get = BoundedBatchGet(groups, self.online, max_response_bytes)
        self._online: AsyncOnlineReads | None = None
        self._deliveries: LoopDeliveries | None = None

    def online(self) -> AsyncOnlineReads:
        """The online store's reader on this worker's event loop (made on first use, in the loop)."""
        if self._online is None:
            config = self.store.config
            timeout = self.store.redis_timeout_s
            self._online = AsyncOnlineReads.from_url(config.require("redis_url"), config.topic_prefix,
                                                     timeout_s=DEFAULT_TIMEOUT_S if timeout is None else timeout)
        return self._online

    async def aclose(self) -> None:
        if self._online is not None:
            await self._online.aclose()

    async def _known_group(self, name: str) -> FeatureGroup:
        """The group, from the view when this worker knows it; else read in the thread pool (a miss
        asks the registry, which waits on Kafka)."""
        if name in self.groups:
            return self._group(name)
        return await self._run(self._group, name)

    async def _aggregation_problem(self, group: FeatureGroup) -> str | None:
        """Why aggregation group ``group`` cannot be read (its source deleted), or None; on the loop
        when the source is known, else in the thread pool (looking the source up may wait on Kafka)."""
        if group.aggregation is None:
            return None
        if group.aggregation.source in self.groups:
            return self.groups.aggregation_problem(group)
        return await self._run(self.groups.aggregation_problem, group)

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    def _group(self, name: str) -> FeatureGroup:
        group = self.groups.get(name)
        if group is None:
            raise ApiError.not_found(f"Resource Not Found: feature group {name!r} does not exist")
        return group

    async def _acked(self, future: Future | asyncio.Future) -> tuple[int, int]:
        # The producer waits out a broker outage up to the delivery timeout and then fails the
        # future itself (ServiceUnavailable naming the record); this bound only catches a report
        # that never comes. A future queued on the event loop has it from LoopDeliveries (one sweep
        # for all, no timer per put); one published from the thread pool is bounded here.
        timeout = self._report_timeout_s()
        try:
            if isinstance(future, Future):
                return await asyncio.wait_for(asyncio.wrap_future(future), timeout)
            return await future
        except (TimeoutError, DeliveryOverdue):
            raise ServiceUnavailableError(f"Kafka at {self.store.publisher.bootstrap} did not acknowledge "
                                          f"the record within {timeout:g} s; it was not delivered") from None

    def _report_timeout_s(self) -> float:
        return self.store.publisher.timeout_s + REPORT_GRACE_S

    # ---------------------------------------------------------------- writes
    def _validate_put(self, name: str, record_items: Any, target_stores: Any, ttl: Any, *,
                      may_wait: bool = True) -> tuple[FeatureGroup, Message]:
        group = self._group(name)
        for attempt in (0, 1):
            stores = None if target_stores is None else string_list(target_stores, "TargetStores", max_items=2)
            try:
                record = record_from_wire(group, record_items)
                msg = compile_validator(group).validate(record, target_stores=stores,
                                                        ttl_seconds=ttl_seconds(ttl),
                                                        api_invocation_time_ns=time.time_ns())
                return group, msg
            except RecordValidationError as exc:
                # A feature this worker's cached definition lacks may have been added a moment
                # ago (by another worker): re-read the definition once before refusing.
                if attempt or exc.feature is None or group.has_feature(exc.feature):
                    raise
                if not may_wait:
                    raise _WouldWait from None
                newer = self.groups.get(name, fresh=True)
                if newer is None or newer.version == group.version:
                    raise
                group = newer
        raise AssertionError("unreachable")

    def _publish(self, group: FeatureGroup, msg: Message, *, may_wait: bool = True) -> Future | asyncio.Future:
        return self._publish_encoded(group, encode(msg, group.name), may_wait=may_wait)

    def _publish_encoded(self, group: FeatureGroup, encoded: tuple[bytes, bytes, list[tuple[str, bytes]]], *,
                         may_wait: bool = True) -> Future | asyncio.Future:
        """Queue one record: from the thread pool (``may_wait``) with a concurrent Future, or on the event
        loop with an asyncio future that the delivery thread settles in batches (``delivery.py``)."""
        key, value, headers = encoded
        topic = self.store.registry.topic_of(group)
        publisher = self.store.publisher
        if may_wait:
            return publisher.publish(topic, key, value, headers)  # the single-record producer: linger.ms=0
        if self._deliveries is None:
            self._deliveries = LoopDeliveries(asyncio.get_running_loop(), self._report_timeout_s())
        future, on_delivery = self._deliveries.expect()
        try:
            queued = publisher.try_produce(topic, key, value, headers, on_delivery)
        except BaseException:
            future.cancel()  # nothing was queued: no report will come, and nobody will await it
            raise
        if not queued:
            future.cancel()  # as above: the sweep drops it, rather than fail it when overdue
            raise _WouldWait
        return future

    async def _write(self, prepare: Callable[..., Future | asyncio.Future], name: str, arg: Any
                     ) -> Future | asyncio.Future:
        """Validate and queue one write on the event loop when nothing in it waits (a known group, a
        checked topic, room in the producer's queue): the hop to the thread pool and back cost more
        than the work itself (~20 µs). Otherwise, or when it turns out to wait, in the pool."""
        if self.inline_writes and name in self.groups:
            try:
                return prepare(name, arg, may_wait=False)
            except _WouldWait:
                pass  # nothing was queued: do it again where waiting is allowed
        return await self._run(prepare, name, arg)

    def _prepare_put(self, name: str, body: dict[str, Any], *, may_wait: bool = True) -> Future | asyncio.Future:
        group, msg = self._validate_put(name, body.get("Record"), body.get("TargetStores"), body.get("TtlDuration"),
                                        may_wait=may_wait)
        return self._publish(group, msg, may_wait=may_wait)

    async def put_record(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        await self._acked(await self._write(self._prepare_put, name, body))
        return {}

    def _prepare_delete(self, name: str, query: dict[str, list[str]], *,
                        may_wait: bool = True) -> Future | asyncio.Future:
        rid = _one(query, "RecordIdentifierValueAsString", required=True)
        event_time = _one(query, "EventTime", required=True)
        mode = _one(query, "DeletionMode") or SOFT_DELETE
        group = self._group(name)
        stores = query.get("TargetStores")
        msg = validate_delete(group, rid, event_time_from_wire(group, event_time or ""), mode=mode,
                              target_stores=stores, api_invocation_time_ns=time.time_ns())
        if msg.mode == HARD_DELETE:
            if not may_wait:
                raise _WouldWait  # the check reads Redis: never on the event loop
            self.store.check_hard_delete(group, msg)
        return self._publish(group, msg, may_wait=may_wait)

    async def delete_record(self, name: str, query: dict[str, list[str]]) -> dict[str, Any]:
        await self._acked(await self._write(self._prepare_delete, name, query))
        return {}

    def _prepare_batch_write(self, body: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]],
                                                                 list[tuple[dict[str, Any], Future]]]:
        """Validate and encode every entry, then publish the valid ones: a refusal found in any
        entry is known before anything is published, and every entry ends in ``Errors``, in
        ``UnprocessedEntries`` or acknowledged (never a 500 after a partial publish)."""
        entries = body.get("Entries")
        if not isinstance(entries, list) or not 1 <= len(entries) <= MAX_BATCH_WRITE_ENTRIES:
            raise ApiError.validation(f"Entries must be a list of 1 to {MAX_BATCH_WRITE_ENTRIES} entries; got "
                                      f"{len(entries) if isinstance(entries, list) else type(entries).__name__}")
        if not all(isinstance(entry, dict) for entry in entries):
            n = next(n for n, entry in enumerate(entries) if not isinstance(entry, dict))
            raise ApiError.validation(f"Entries[{n}] must be an object with FeatureGroupName and Record")
        default_ttl = body.get("TtlDuration")
        errors: list[dict[str, Any]] = []
        ready: list[tuple[dict[str, Any], FeatureGroup, tuple[bytes, bytes, list[tuple[str, bytes]]]]] = []
        for n, entry in enumerate(entries):
            try:
                name = group_name(entry.get("FeatureGroupName"), f"Entries[{n}].FeatureGroupName")
                ttl = entry.get("TtlDuration", default_ttl)
                group, msg = self._validate_put(name, entry.get("Record"), entry.get("TargetStores"), ttl)
                ready.append((entry, group, encode(msg, group.name)))
            except (ApiError, FeatureStoreError) as exc:
                errors.append(self._entry_error(entry, exc))
        sent: list[tuple[dict[str, Any], Future]] = []
        unprocessed: list[dict[str, Any]] = []
        for entry, group, encoded in ready:
            try:
                sent.append((entry, self._publish_encoded(group, encoded)))
            except ServiceUnavailableError as exc:
                log_unavailable(backend_of(exc), exc, "BatchWriteRecord")
                unprocessed.append(entry)  # the caller may retry these as they are
            except Exception as exc:  # noqa: BLE001 - reported per entry: others may be published already
                errors.append(self._entry_error(entry, exc))
        return errors, unprocessed, sent

    @staticmethod
    def _entry_error(entry: dict[str, Any], exc: BaseException) -> dict[str, Any]:
        err = from_exception(exc)
        if isinstance(exc, ServiceUnavailableError):
            log_unavailable(backend_of(exc), exc, "BatchWriteRecord")
        elif err.status >= 500:  # an InternalFailure: its cause goes to the log, as every 500's does
            log.error("BatchWriteRecord: an entry failed: %s", err, exc_info=exc)
        return {"Entry": entry, "ErrorCode": err.code_for("runtime"), "ErrorMessage": str(err)}

    async def batch_write_record(self, body: dict[str, Any]) -> dict[str, Any]:
        errors, unprocessed, sent = await self._run(self._prepare_batch_write, body)
        for entry, future in sent:
            try:
                await self._acked(future)
            except ServiceUnavailableError as exc:
                log_unavailable(backend_of(exc), exc, "BatchWriteRecord")
                unprocessed.append(entry)  # the caller may retry these as they are
            except Exception as exc:  # noqa: BLE001 - one entry's failure; the others were published
                errors.append(self._entry_error(entry, exc))
        return {"Errors": errors, "UnprocessedEntries": unprocessed}

    # ---------------------------------------------------------------- reads
    async def get_record(self, name: str, query: dict[str, list[str]]) -> dict[str, Any]:
        rid_text = _one(query, "RecordIdentifierValueAsString", required=True)
        features = query.get("FeatureName")
        with_exp = _expiration(_one(query, "ExpirationTimeResponse"))
        group = await self._known_group(name)
        problem = await self._aggregation_problem(group)
        if problem is not None:
            raise ApiError.validation(problem)
        rid = record_id(group, rid_text)
        found = await self.online().get_record(group, rid, features, with_expires_at=with_exp)
        if found is None:
            return {}  # the reference answers 200 without a Record when there is none
        if not with_exp:
            return {"Record": record_to_wire(found)}
        out: dict[str, Any] = {"Record": record_to_wire(found["Record"])}
        if found["ExpiresAt"] is not None:
            out["ExpiresAt"] = found["ExpiresAt"]
        return out

    async def batch_get_record(self, body: dict[str, Any]) -> dict[str, Any]:
        with_exp = _expiration(body.get("ExpirationTimeResponse"))
        return await self._batch_get(body, with_exp, self._run)
