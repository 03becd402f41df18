"""Reads of the online store without the I/O: what to ask Redis, and what its replies mean.

The blocking store (``store.py``) and the event-loop reader (``async_reads.py``) plan their reads
here, send the commands their own way (redis-py's blocking or asyncio client; both queue
pipeline commands the same way), and hand the replies back here. So a record read either way is
checked, decoded, expired and refused identically, and the two cannot drift apart.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import redis
from redis.exceptions import RedisClusterException

from schemas.errors import RecordValidationError, ServiceUnavailableError
from schemas.eventtime import format_iso
from schemas.group import FeatureGroup
from schemas.names import online_key
from sinks.online.checks import check_feature_names, check_group, check_record_id, check_request
from sinks.online.codec import decode_record
from sinks.online.errors import CorruptRecordError
from sinks.online.results import BatchGetResult, FoundRecord, RecordError

MAX_IDS_PER_GROUP = 100  # BatchGetRecord's limit in the reference service
META_FIELDS = ("__et", "__exp", "__del", "__life")
SERVICE_ERRORS = (redis.ConnectionError, redis.TimeoutError, RedisClusterException)

# One record to read: (group, record id, feature names or None for all).
Planned = tuple[FeatureGroup, str, tuple[str, ...] | None]


def now_or(now_ns: int | None) -> int:
    return time.time_ns() if now_ns is None else now_ns


@contextmanager
def service(where: str, action: str) -> Iterator[None]:
    """Turn a Redis that is down, or refuses our credentials, into ServiceUnavailableError naming it."""
    try:
        yield
    except redis.AuthenticationError as exc:
        raise ServiceUnavailableError(f"Redis at {where} refused our credentials while trying "
                                      f"to {action} ({exc})") from exc
    except SERVICE_ERRORS as exc:
        raise ServiceUnavailableError(
            f"Redis at {where} did not answer while trying to {action} ({exc}); is it running "
            f"and is FEATURESTREAM_REDIS_URL right?") from exc


def fetch(client: Any, key: str, names: tuple[str, ...] | None) -> Any:
    """Queue (on a pipeline) or send (on a client) the read of one record's hash."""
    if names is None:
        return client.hgetall(key)
    return client.hmget(key, [*META_FIELDS, *names])


@dataclass(frozen=True)
class OneRead:
    """A checked GetRecord of a plain (not aggregation) group: its key, then its answer."""

    group: FeatureGroup
    record_id: str
    names: tuple[str, ...] | None
    key: str

    @property
    def action(self) -> str:
        return f"read record {self.record_id!r} of feature group {self.group.name!r}"

    def refused(self, exc: redis.ResponseError) -> CorruptRecordError:
        """Redis refused the read (e.g. WRONGTYPE: a non-hash value under our key)."""
        return CorruptRecordError(
            f"feature group {self.group.name!r}, record {self.record_id!r}: Redis refused to read key "
            f"{self.key!r} ({exc}); it holds data not written by featurestream: delete it or wipe and "
            f"replay the group", group=self.group.name, record_id=self.record_id)

    def answer(self, raw: Any, now_ns: int | None, with_expires_at: bool) -> dict[str, Any] | None:
        return shape(decode_record(self.group, self.record_id, zip_fields(raw, self.names), now_or(now_ns)),
                     with_expires_at)


def check_get(group: FeatureGroup, record_id: object, features: object) -> tuple[str, tuple[str, ...] | None]:
    """GetRecord's arguments checked: (record id as keyed, feature names or None)."""
    check_group(group)
    return check_record_id(group, record_id), check_feature_names(group, features)


def plan_get(prefix: str, group: FeatureGroup, rid: str, names: tuple[str, ...] | None) -> OneRead:
    return OneRead(group, rid, names, online_key(prefix, group.name, rid))


def plan_batch(requests: object, result: BatchGetResult) -> list[Planned]:
    """The records a batch_get reads, each once; bad requests and ids go to ``result.errors``."""
    if isinstance(requests, str | bytes) or not isinstance(requests, Sequence):
        raise RecordValidationError(
            f"batch_get takes a list of (feature group, record ids, feature names or None); got "
            f"{type(requests).__name__}", value=requests)
    plan: list[Planned] = []
    for n, request in enumerate(requests):
        group, ids, features = check_request(n, request)
        try:
            names = check_feature_names(group, features)
            if len(ids) > MAX_IDS_PER_GROUP:
                raise RecordValidationError(
                    f"feature group {group.name!r}: {len(ids)} record identifiers requested; at "
                    f"most {MAX_IDS_PER_GROUP} per group in one batch_get (split the request)",
                    group=group.name, value=len(ids))
        except RecordValidationError as exc:
            result.errors.extend(RecordError(group.name, str(r), "ValidationError", str(exc)) for r in ids)
            continue
        seen: set[str] = set()
        for raw_id in ids:
            try:
                rid = check_record_id(group, raw_id)
            except RecordValidationError as exc:
                result.errors.append(RecordError(group.name, str(raw_id), "ValidationError", str(exc)))
                continue
            if rid not in seen:
                seen.add(rid)
                plan.append((group, rid, names))
    return plan


def split_aggregates(plan: list[Planned]) -> tuple[list[Planned], list[tuple[FeatureGroup, list[str],
                                                                          tuple[str, ...] | None]]]:
    """(plain records, aggregation reads): an aggregation group's records are computed from its
    tiles, one read per group and feature list."""
    asked: dict[tuple[str, tuple[str, ...] | None], tuple[FeatureGroup, list[str]]] = {}
    rest = []
    for group, rid, names in plan:
        if group.is_aggregation:
            asked.setdefault((group.name, names), (group, []))[1].append(rid)
        else:
            rest.append((group, rid, names))
    return rest, [(group, ids, names) for (_name, names), (group, ids) in asked.items()]


def add_aggregates(group: FeatureGroup, ids: list[str], found: list[dict[str, Any] | None] | Exception,
                   result: BatchGetResult) -> None:
    """One aggregation read's outcome into ``result`` (a failure fails only its records)."""
    if isinstance(found, ServiceUnavailableError):
        result.unprocessed.extend((group.name, rid) for rid in ids)
        return
    if isinstance(found, CorruptRecordError):
        result.errors.extend(RecordError(group.name, rid, "CorruptRecord", str(found)) for rid in ids)
        return
    if isinstance(found, BaseException):
        raise found
    for rid, record in zip(ids, found, strict=True):
        if record is None:
            result.missing.append((group.name, rid))
        else:
            result.records.append(FoundRecord(group.name, rid, record))


def queue_batch(pipe: Any, prefix: str, plan: list[Planned]) -> None:
    for group, rid, names in plan:
        fetch(pipe, online_key(prefix, group.name, rid), names)


def decode_batch(plan: list[Planned], replies: list[Any], now_ns: int | None, result: BatchGetResult) -> None:
    """The replies of :func:`queue_batch` (``raise_on_error=False``) into ``result``."""
    now = now_or(now_ns)
    for (group, rid, names), reply in zip(plan, replies, strict=True):
        if isinstance(reply, SERVICE_ERRORS):
            result.unprocessed.append((group.name, rid))  # e.g. one cluster node down: retry later
            continue
        try:
            if isinstance(reply, Exception):
                raise CorruptRecordError(
                    f"feature group {group.name!r}, record {rid!r}: Redis refused to read the "
                    f"record's key ({reply}); it holds data not written by featurestream",
                    group=group.name, record_id=rid)
            found = decode_record(group, rid, zip_fields(reply, names), now)
        except CorruptRecordError as exc:
            result.errors.append(RecordError(group.name, rid, "CorruptRecord", str(exc)))
            continue
        if found is None:
            result.missing.append((group.name, rid))
        else:
            result.records.append(FoundRecord(group.name, rid, found[0]))


def zip_fields(reply: Any, names: tuple[str, ...] | None) -> dict[bytes | str, Any]:
    if names is None:
        return reply or {}
    return dict(zip((*META_FIELDS, *names), reply, strict=True))


def shape(found: tuple[dict[str, Any], int | None] | None, with_expires_at: bool) -> dict[str, Any] | None:
    if found is None:
        return None
    record, expires_at = found
    if not with_expires_at:
        return record
    return {"Record": record, "ExpiresAt": None if expires_at is None else format_iso(expires_at)}


__all__ = ["MAX_IDS_PER_GROUP", "SERVICE_ERRORS", "OneRead", "add_aggregates", "check_get", "decode_batch", "fetch",
           "plan_batch", "plan_get", "queue_batch", "service", "shape", "split_aggregates", "zip_fields"]
