"""The Redis online store: latest record per identifier, written only if newer, read by id.

All ordering decisions happen inside Redis (``write_if_newer.lua``), so any number of
writers may apply the same messages in any order and end in the same state. This module
only prepares arguments, pipelines round trips and turns replies into results.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from itertools import islice
from typing import Any

import redis
import redis.cluster
from redis.crc import key_slot
from redis.exceptions import NoScriptError

from schemas.errors import RecordValidationError, ServiceUnavailableError
from schemas.group import FeatureGroup
from schemas.messages import HARD_DELETE, ONLINE, SOFT_DELETE, DeleteMessage, Message, PutMessage
from schemas.names import online_key, online_key_pattern, record_id_from_key
from schemas.ordering import script_args
from schemas.types import INT64_MAX, INT64_MIN
from sinks.online.aggregates import AggregateStore
from sinks.online.checks import check_group, check_record_id
from sinks.online.codec import encode_features, of_life, pack_checked_features, pack_fields
from sinks.online.connect import DEFAULT_TIMEOUT_S, RedisClient, connect, redact_url
from sinks.online.errors import CorruptRecordError
from sinks.online.expiry import expires_at_ns, is_expired, ns_to_expire_ms
from sinks.online.lua import load_script
from sinks.online.reads import (
    MAX_IDS_PER_GROUP,
    SERVICE_ERRORS,
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
from sinks.online.results import BatchGetResult, BatchResult
from sinks.online.script_calls import ScriptCalls
from sinks.online.status import (
    CODE_CORRUPT,
    CODE_FAILED,
    CODE_FOREIGN,
    WriteStatus,
    parse_script_replies,
    rejection_reason,
    script_reply_codes,
    status_of,
)

_WIPE_CHUNK = 500
# Records per script call: about a millisecond of Redis time, during which it serves nothing else.
SCRIPT_BATCH = 500
_STATUS_OF_CODE = {code: status_of(code) for code in range(1, CODE_CORRUPT)}
_FORGET_VERSION = ("if redis.call('HGET', KEYS[1], '__seq') == ARGV[1] then return redis.call('DEL', KEYS[1]) "
                   "end return 0")


def _load_script() -> str:
    return load_script("write_if_newer.lua")


def _is_int(value: object) -> bool:
    return type(value) is int  # bool is an int subclass but never a valid time/offset


def _chunks(it: Iterator[Any], size: int) -> Iterator[list[Any]]:
    while chunk := list(islice(it, size)):
        yield chunk


class OnlineStore:
    """Latest-record-per-identifier view of feature groups in Redis (standalone or Cluster).

    ``prefix`` is the topic prefix: keys are ``<prefix>:<group>:<record id>`` so several
    deployments (or test runs) can share one Redis without seeing each other's records.
    """

    def __init__(self, client: RedisClient, prefix: str, *, where: str | None = None) -> None:
        if not isinstance(prefix, str) or not prefix or ":" in prefix:
            raise ValueError(f"online store prefix must be a non-empty string without ':' (it is the "
                             f"topic prefix, e.g. 'featurestream'); got {prefix!r}")
        self._client = client
        self._prefix = prefix
        self._cluster = isinstance(client, redis.cluster.RedisCluster)
        self._where = where or self._describe_client()
        self._script = _load_script()
        # EVALSHA with a locally computed digest: the script is sent once (on NOSCRIPT), not per call.
        self._sha = hashlib.sha1(self._script.encode("utf-8")).hexdigest()
        self._aggregates: AggregateStore | None = None

    @classmethod
    def from_url(cls, url: str, prefix: str, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> OnlineStore:
        """Connect (see :func:`sinks.online.connect.connect` for URL forms) and build a store."""
        return cls(connect(url, timeout_s=timeout_s), prefix, where=redact_url(url))

    @property
    def client(self) -> RedisClient:
        return self._client

    @property
    def aggregates(self) -> AggregateStore:
        """The tiles of aggregation groups, on the same client (reads of such groups go there)."""
        if self._aggregates is None:
            self._aggregates = AggregateStore(self._client, self._prefix, where=f"Redis at {self._where}")
        return self._aggregates

    @property
    def prefix(self) -> str:
        return self._prefix

    def close(self) -> None:
        self._client.close()

    # ------------------------------------------------------------------ writes

    def apply_batch(self, group: FeatureGroup, items: Sequence[tuple[Message, int, int]], *,
                    now_ns: int | None = None, checked: bool = False) -> BatchResult:
        """Apply puts/deletes ``(message, kafka partition, kafka offset)`` in one pipelined round trip.

        Each message is applied only if its (event time, partition, offset) is newer than the
        stored record's. Bad messages are REJECTED with a reason and do not stop the batch; a
        malformed item (not a 3-tuple of a message and two non-negative ints) raises
        RecordValidationError before anything is written. ``now_ns`` decides which puts are
        already expired (default: this machine's clock). ``checked=True`` says every message
        was already checked against ``group`` by ``schemas`` (``streams.route`` does that for
        everything read off a topic): the per-item and per-value checks are then skipped.
        """
        check_group(group)
        items = list(items)
        if not checked:
            items = [_check_item(group, i, item) for i, item in enumerate(items)]
        now = time.time_ns() if now_ns is None else now_ns
        result = BatchResult(statuses=[WriteStatus.SKIPPED] * len(items))
        calls = ScriptCalls([], [], [])
        rows: list[int] = []
        for i, (message, partition, offset) in enumerate(items):
            if not group.online_enabled or ONLINE not in message.target_stores:
                continue
            try:
                args = write_script_args(group, message, partition, offset, now, checked)
            except RecordValidationError as exc:
                result.statuses[i] = WriteStatus.REJECTED
                result.rejected.append((str(message.id), str(exc)))
                continue
            calls.add(message.id, online_key(self._prefix, group.name, message.id), args)
            rows.append(i)
        if rows:
            self._run_script(group, calls, rows, result)
        return result

    def apply_script_calls(self, group: FeatureGroup, calls: ScriptCalls) -> BatchResult:
        """Run write_if_newer.lua over records whose arguments are already built (the online
        processor builds them from a batch's columns: ``sinks/online/column_args.py``), in one
        pipelined round trip; ``statuses[k]`` is record k's."""
        check_group(group)
        n = len(calls)
        result = BatchResult(statuses=[WriteStatus.SKIPPED] * n)
        if n:
            self._run_script(group, calls, list(range(n)), result)
        return result

    def _run_script(self, group: FeatureGroup, calls: ScriptCalls, rows: list[int], result: BatchResult) -> None:
        """Run write_if_newer.lua over ``calls`` (record k's status goes to ``result.statuses[rows[k]]``):
        one EVALSHA per chunk of records (per hash slot on a cluster), all chunks in one pipelined round trip."""
        pending = list(range(len(calls)))
        for _attempt in range(2):
            chunks = self._script_chunks(calls, pending)
            pipe = self._client.pipeline(transaction=False)
            for chunk in chunks:
                keys, argv = calls.select(chunk)
                # execute_command, not pipe.evalsha(): redis-py's cluster pipeline blocks the
                # evalsha method, yet routes a raw EVALSHA by its keys' slot like any command.
                pipe.execute_command("EVALSHA", self._sha, len(keys), *keys, *argv)
            with self._service(f"write {len(pending)} records of feature group {group.name!r}"):
                replies = pipe.execute(raise_on_error=False)
            missing_script: list[int] = []
            for chunk, reply in zip(chunks, replies, strict=True):
                if isinstance(reply, NoScriptError):
                    missing_script += chunk
                    continue
                self._record_replies(group, calls, rows, chunk, reply, result)
            if not missing_script:
                return
            # The script cache is empty after a restart/failover: load it (on every primary
            # of a cluster) and rerun only those messages; the script never ran for them.
            with self._service("load the write_if_newer script"):
                self._sha = self._client.script_load(self._script)
            pending = missing_script
        raise ServiceUnavailableError(
            f"Redis at {self._where} keeps answering NOSCRIPT for the write_if_newer script even "
            f"after SCRIPT LOAD; is a proxy routing commands to different servers?")

    def _script_chunks(self, calls: ScriptCalls, pending: list[int]) -> list[list[int] | range]:
        """Split ``pending`` (record positions in ``calls``) into script calls: on a cluster the keys of
        one call must share a hash slot; everywhere a call is bounded, because Redis serves nothing
        else while it runs."""
        if self._cluster:
            by_slot: dict[int, list[int]] = {}
            for k in pending:
                by_slot.setdefault(key_slot(calls.keys[k].encode("utf-8")), []).append(k)
            groups: list[list[int]] = list(by_slot.values())
            return [g[i:i + SCRIPT_BATCH] for g in groups for i in range(0, len(g), SCRIPT_BATCH)]
        if pending[-1] - pending[0] + 1 == len(pending):  # sorted and distinct: contiguous, the usual case
            # ranges: their arguments are sliced without a Python step per record
            lo, hi = pending[0], pending[-1] + 1
            return [range(a, min(a + SCRIPT_BATCH, hi)) for a in range(lo, hi, SCRIPT_BATCH)]
        return [pending[i:i + SCRIPT_BATCH] for i in range(0, len(pending), SCRIPT_BATCH)]

    def _record_replies(self, group: FeatureGroup, calls: ScriptCalls, rows: list[int], chunk: list[int] | range,
                        reply: Any, result: BatchResult) -> None:
        if isinstance(reply, SERVICE_ERRORS):
            raise ServiceUnavailableError(
                f"Redis at {self._where} failed while writing {len(chunk)} records of feature group "
                f"{group.name!r} ({reply})") from reply
        statuses = result.statuses
        if isinstance(reply, Exception):
            # The server refused the whole call (the script did not run, or raised outside a write):
            # every record of it is refused with the server's words. A write Redis refuses inside the
            # script (OOM, MISCONF) fails only its record: CODE_FAILED below.
            for k in chunk:
                statuses[rows[k]] = WriteStatus.REJECTED
                result.rejected.append((calls.ids[k], (
                    f"feature group {group.name!r}, record {calls.ids[k]!r}: Redis refused the write to "
                    f"key {calls.keys[k]!r} ({reply})")))
            return
        codes = script_reply_codes(reply, len(chunk))
        for k, code in zip(chunk, codes, strict=True):
            statuses[rows[k]] = _STATUS_OF_CODE.get(code) or status_of(code)
        if all(code < CODE_CORRUPT for code in codes):
            return  # the usual case: nothing to explain
        for (k, code), (_code, stored_et, stored_seq) in zip(zip(chunk, codes, strict=True),
                                                            parse_script_replies(reply, len(chunk)), strict=True):
            rid, key = calls.ids[k], calls.keys[k]
            if code == CODE_FOREIGN:
                # e.g. WRONGTYPE: the key holds a non-hash value someone else wrote.
                result.rejected.append((rid, (
                    f"feature group {group.name!r}, record {rid!r}: Redis refused the write to key "
                    f"{key!r} ({stored_et}); the key holds data not written by featurestream: delete it "
                    f"or wipe and replay the group")))
                continue
            if code == CODE_FAILED:
                # Redis refused a write of this record alone (the script goes on with the rest): it did
                # not land, and only it is reported, with Redis's words.
                result.rejected.append((rid, (
                    f"feature group {group.name!r}, record {rid!r}: Redis refused the write to key "
                    f"{key!r} ({stored_et}); the rest of its batch was applied")))
                continue
            op, et = calls.op_and_event_time(k)
            reason = rejection_reason(group.name, rid, op, et, code, stored_et, stored_seq)
            if reason is not None:
                result.rejected.append((rid, reason))

    def forget_version(self, group: FeatureGroup, record_id: str, partition: int, offset: int) -> bool:
        """Delete the record of ``record_id`` only if it holds the version written at (``partition``,
        ``offset``): a stored value that differs from its own version's message (altered behind our back)
        cannot be replaced by write-if-newer, which sees a duplicate. Atomic; True if deleted."""
        key = online_key(self._prefix, group.name, check_record_id(group, record_id))
        with self._service(f"reset record {record_id!r} of feature group {group.name!r}"):
            return bool(self._client.eval(_FORGET_VERSION, 1, key, f"{partition}:{offset}"))

    # ------------------------------------------------------------------ reads

    def get_record(self, group: FeatureGroup, record_id: str, features: Sequence[str] | None = None, *,
                   with_expires_at: bool = False, now_ns: int | None = None) -> dict[str, Any] | None:
        """The record's non-null features (only ``features`` if given), or None if there is none.

        Expired (even before Redis evicts the key) and soft-deleted records are None. With
        ``with_expires_at`` the answer is ``{"Record": {...}, "ExpiresAt": ISO text or None}``,
        the shape of the reference service's GetRecord response.
        """
        rid, names = check_get(group, record_id, features)
        if group.is_aggregation:  # computed at read time from its tiles
            found = self.aggregates.get_records(group, [rid], names, now_ns=now_ns)[0]
            return shape(None if found is None else (found, None), with_expires_at)
        read = plan_get(self._prefix, group, rid, names)
        with self._service(read.action):
            try:
                raw = fetch(self._client, read.key, names)
            except redis.ResponseError as exc:
                raise read.refused(exc) from exc
        return read.answer(raw, now_ns, with_expires_at)

    def batch_get(self, requests: Sequence[tuple[FeatureGroup, Sequence[str], Sequence[str] | None]], *,
                  now_ns: int | None = None) -> BatchGetResult:
        """Several records of several groups in one pipelined round trip (BatchGetRecord).

        ``requests`` holds ``(group, record ids, feature names or None)``; at most 100 ids per
        group. Problems with one group (too many ids, unknown features) or one record (bad id,
        corrupt stored value) are reported in ``errors`` and do not fail the others.
        """
        result = BatchGetResult()
        plan, aggregate_reads = split_aggregates(plan_batch(requests, result))
        for group, ids, names in aggregate_reads:  # one round trip per group and feature list
            try:
                found: list[dict[str, Any] | None] | Exception = self.aggregates.get_records(group, ids, names,
                                                                                              now_ns=now_ns)
            except (ServiceUnavailableError, CorruptRecordError) as exc:
                found = exc
            add_aggregates(group, ids, found, result)
        if not plan:
            return result
        pipe = self._client.pipeline(transaction=False)
        queue_batch(pipe, self._prefix, plan)
        with self._service(f"read {len(plan)} records"):
            replies = pipe.execute(raise_on_error=False)
        decode_batch(plan, replies, now_ns, result)
        return result

    def record_ids(self, group: FeatureGroup, *, include_deleted: bool = False,
                   now_ns: int | None = None) -> list[str]:
        """Every identifier with a record online, sorted (SCAN over the group's keys: O(records)).

        Expired records are left out; soft-deleted ones (a delete marker online) unless
        ``include_deleted``. Hard-deleted records have no key, so they are never listed."""
        check_group(group)
        now = time.time_ns() if now_ns is None else now_ns
        found: list[str] = []
        with self._service(f"list records of feature group {group.name!r}"):
            keys = list(self._client.scan_iter(match=online_key_pattern(self._prefix, group.name), count=1000))
            for chunk in _chunks(iter(keys), _WIPE_CHUNK):
                pipe = self._client.pipeline(transaction=False)
                for key in chunk:
                    pipe.hmget(key, ["__exp", "__del", "__life"])
                for key, (exp, deleted, life) in zip(chunk, pipe.execute(), strict=True):
                    rid = record_id_from_key(self._prefix, group.name, key)
                    if rid is None or (exp is not None and int(exp) <= now) or not of_life(group, life):
                        continue
                    if deleted is not None and not include_deleted:
                        continue
                    found.append(rid)
        return sorted(found)

    # ------------------------------------------------------------------ admin

    def record_meta(self, group: FeatureGroup | str, record_id: str) -> dict[str, Any] | None:
        """The stored meta fields and the key's PTTL (for tests and debugging), or None if no key."""
        name = group.name if isinstance(group, FeatureGroup) else group
        key = online_key(self._prefix, name, str(record_id))
        with self._service(f"read meta of record {record_id!r} of feature group {name!r}"):
            pipe = self._client.pipeline(transaction=False)
            pipe.hmget(key, ["__et", "__seq", "__exp", "__del", "__v"])
            pipe.pttl(key)
            (et, seq, exp, deleted, version), pttl = pipe.execute()
        if et is None and pttl == -2:
            return None

        def text(v: bytes | None) -> str | None:
            return None if v is None else v.decode("utf-8", "replace")

        return {"event_time_ns": None if et is None else int(et), "seq": text(seq),
                "expires_at_ns": None if exp is None else int(exp), "deleted": text(deleted),
                "version": None if version is None else int(version), "pttl_ms": pttl}

    def wipe_group(self, group: FeatureGroup | str) -> int:
        """Remove every online record of ``group`` (SCAN + UNLINK on every node); returns how many."""
        name = group.name if isinstance(group, FeatureGroup) else group
        pattern = online_key_pattern(self._prefix, name)
        removed = 0
        with self._service(f"wipe feature group {name!r}"):
            for chunk in _chunks(self._client.scan_iter(match=pattern, count=1000), _WIPE_CHUNK):
                if self._cluster:
                    # Keys of one group hash to many slots: one UNLINK per key, pipelined per node.
                    pipe = self._client.pipeline(transaction=False)
                    for key in chunk:
                        pipe.unlink(key)
                    removed += sum(pipe.execute())
                else:
                    removed += self._client.unlink(*chunk)
        return removed

    # ------------------------------------------------------------------ helpers

    def _describe_client(self) -> str:
        if self._cluster:
            return "the Redis Cluster"
        kwargs = getattr(getattr(self._client, "connection_pool", None), "connection_kwargs", {})
        return f"{kwargs.get('host', '?')}:{kwargs.get('port', '?')}"

    def _service(self, action: str) -> AbstractContextManager[None]:
        return service(self._where, action)


# ---------------------------------------------------------------------- argument checks



def _check_item(group: FeatureGroup, index: int, item: object) -> tuple[Message, int, int]:
    if not isinstance(item, tuple) or len(item) != 3:
        raise RecordValidationError(
            f"feature group {group.name!r}: batch item {index} must be (message, kafka partition, "
            f"kafka offset); got {item!r:.120}", group=group.name, value=item)
    message, partition, offset = item
    if not isinstance(message, PutMessage | DeleteMessage):
        raise RecordValidationError(
            f"feature group {group.name!r}: batch item {index} holds a {type(message).__name__}; "
            f"expected a PutMessage or DeleteMessage", group=group.name, value=message)
    for what, value in (("partition", partition), ("offset", offset)):
        if not _is_int(value) or value < 0:
            raise RecordValidationError(
                f"feature group {group.name!r}: batch item {index} (record {message.id!r}) has Kafka "
                f"{what} {value!r}; expected a non-negative integer", group=group.name, value=value)
    return message, partition, offset


def write_script_args(group: FeatureGroup, message: Message, partition: int, offset: int,
                 now_ns: int, checked: bool = False) -> list[Any]:
    """ARGV for write_if_newer.lua (documented at the top of the script)."""
    rid = check_record_id(group, message.id)
    et = message.event_time_ns
    if not _is_int(et) or not INT64_MIN <= et <= INT64_MAX:
        raise RecordValidationError(
            f"feature group {group.name!r}, record {rid!r}: event_time_ns {et!r} is not a 64-bit "
            f"integer count of nanoseconds since the epoch", group=group.name, value=et)
    group_ttl = group.ttl.seconds if group.ttl is not None else None
    if isinstance(message, PutMessage):
        op = "put"
        ttl = message.ttl_seconds
        if ttl is not None and (not _is_int(ttl) or ttl <= 0):
            raise RecordValidationError(
                f"feature group {group.name!r}, record {rid!r}: ttl_seconds {ttl!r} is not a positive "
                f"integer number of seconds (or null for the group's TTL)", group=group.name, value=ttl)
        fields = [pack_checked_features(message.record) if checked
                  else pack_fields(encode_features(group, rid, message.record))]
        expires = expires_at_ns(et, ttl, group_ttl)
    elif message.mode in (SOFT_DELETE, HARD_DELETE):
        op = "soft" if message.mode == SOFT_DELETE else "hard"
        fields = [""]  # the script's 9th argument is the put's fields; a delete has none (10th: the life)
        # A soft-delete tombstone only needs to outlive the records it hides: the group TTL.
        expires = expires_at_ns(et, None, group_ttl) if op == "soft" else None
    else:
        raise RecordValidationError(
            f"feature group {group.name!r}, record {rid!r}: delete mode {message.mode!r} is not "
            f"{SOFT_DELETE} or {HARD_DELETE}", group=group.name, value=message.mode)
    return [op, *script_args(et, partition, offset), "1" if is_expired(expires, now_ns) else "0",
            "" if expires is None else str(expires), "" if expires is None else str(ns_to_expire_ms(expires)),
            str(message.schema_version), *fields, group.life]












__all__ = ["MAX_IDS_PER_GROUP", "OnlineStore"]
