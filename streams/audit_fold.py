"""The auditor's fold of a group topic: per id, the latest version the online store must hold.

The fold reads every record of every topic, continuously, so it must cost little per record: far
less than the processor pays to apply it. Per record it needs only what decides the winner (id,
event time, Kafka position, put/delete, hard or soft, TTL, target stores) and whether a worker would
dead-letter the record (poison is skipped online and judged apart offline). So a batch is decoded
in one call into columns (``schemas.batch.decode_batch``), which also PROVES which rows decode and
conform to the group; only the other rows take the per-record path (:func:`decode_checked`, the
exact judgement). The winner of each id keeps its raw JSON value, not a decoded record: full values
are decoded and checked only for the ids an audit samples (:meth:`TopicFold.state`).

Verdicts are those of the per-record fold (decode, check against the group, ``fold_online``) by
construction, and tests/unit/test_audit_fold.py holds the two together on random topics.

Headers: ``decode_batch`` is given none, and the fold reads them itself (:func:`plain_headers`):
the auditor, like ``decode``, accepts any schema version, and a 19-digit invocation time (every
real one) is plain here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow.compute as pc

from schemas.batch import decode_batch
from schemas.errors import RecordValidationError, WireFormatError
from schemas.group import FeatureGroup
from schemas.messages import HARD_DELETE, OFFLINE, ONLINE, Message, PutMessage
from schemas.ordering import VersionKey
from schemas.parity import OnlineState, Step, fold_step
from schemas.wire import FORMAT, H_API_TIME, H_FORMAT, H_SCHEMA_VERSION, check_against_group, decode
from sinks.online.expiry import expires_at_ns
from streams.audit_recent import RecentIds
from streams.route import RawMessage

_FORMAT_PAIR = (H_FORMAT, FORMAT.encode())
_INT64_MAX = 2**63 - 1


def decode_checked(group: FeatureGroup, raw: RawMessage) -> Message | None:
    """The message as every worker sees it, or None when a worker must dead-letter it."""
    try:
        return check_against_group(group, decode(raw.key, raw.value, raw.headers))
    except (WireFormatError, RecordValidationError):
        return None


def _decimal(value: Any, low: int) -> bool:
    return type(value) is bytes and value.isdigit() and low <= int(value) <= _INT64_MAX


def plain_headers(headers: Any) -> bool:
    """Whether ``decode`` surely accepts these headers: none, or the doors' three in their order with
    decimal values in range. False means only "not surely": the per-record path then judges."""
    if headers is None:
        return True
    if type(headers) is not list or len(headers) != 3 or headers[0] != _FORMAT_PAIR:
        return False
    version, api = headers[1], headers[2]
    return (type(version) is tuple and type(api) is tuple and len(version) == 2 and len(api) == 2
            and version[0] == H_SCHEMA_VERSION and api[0] == H_API_TIME
            and _decimal(version[1], 1) and _decimal(api[1], 0))


def plain_headers_of(headers: Sequence[Any]) -> np.ndarray:
    """:func:`plain_headers` of each message. The doors stamp every message of one call alike, so the
    verdict is kept per distinct header list within the batch."""
    out = np.zeros(len(headers), dtype=bool)
    seen: dict[tuple[Any, ...], bool] = {}
    for i, h in enumerate(headers):
        if h is None:
            out[i] = True
        elif type(h) is list and len(h) == 3:
            try:
                k = (h[0], h[1], h[2])
                ok = seen.get(k)
                if ok is None:
                    ok = seen[k] = plain_headers(h)
            except TypeError:  # something unhashable: judged alone
                ok = plain_headers(h)
            out[i] = ok
    return out


class Latest:
    """The winning version of one id: its key, the put's raw JSON value (a row the batch decode
    proved valid under ``group``) or its checked record (a row judged per record), or None for a
    tombstone; and when it expires."""

    __slots__ = ("key", "put", "expires_at_ns", "group")

    def __init__(self, key: VersionKey, put: bytes | Mapping[str, Any] | None, expires: int | None,
                 group: FeatureGroup) -> None:
        self.key = key
        self.put = put
        self.expires_at_ns = expires
        self.group = group


class TopicFold:
    """One group's topic folded so far: the latest online version per id, where each id's last
    version sits, and the offsets the offline store must not hold (not targeted at it, or poison)."""

    def __init__(self, group: FeatureGroup, topic: str, recent: RecentIds | None = None) -> None:
        self.group = group
        self.topic = topic
        self.states: dict[str, Latest | None] = {}           # id -> latest online version (None: no key)
        self.last_seen: dict[str, tuple[int, int]] = {}     # id -> (partition, offset) of its last version
        self.not_targeted: dict[int, set[int]] = {}          # partition -> offsets not for the offline store
        self.poison: dict[int, set[int]] = {}                # partition -> offsets a worker must dead-letter
        self.recent = recent if recent is not None else RecentIds()
        self.records = 0

    def fold(self, raws: Sequence[RawMessage], group: FeatureGroup) -> None:
        """Fold ``raws`` (one batch of this topic, in topic order per partition) checked against ``group``."""
        self.fold_parts([r.key for r in raws], [r.value for r in raws], [r.headers for r in raws],
                        [r.partition for r in raws], [r.offset for r in raws], group)

    def fold_parts(self, keys: Sequence[bytes | None], values: Sequence[Any], headers: Sequence[Any],
                   partitions: Sequence[int], offsets: Sequence[int], group: FeatureGroup) -> None:
        """:meth:`fold` of a batch given as its messages' parts, one list per part."""
        self.group = group
        n = len(values)
        if not n:
            return
        self.records += n
        cols = decode_batch(group, keys, values, [None] * n)
        fast = cols.fast & plain_headers_of(headers)
        ids = cols.id.to_pylist()
        times = cols.event_time_ns.tolist()
        deletes = cols.is_delete.tolist()
        hards = pc.fill_null(pc.equal(cols.mode, HARD_DELETE), False).to_pylist()
        ttls = cols.ttl_seconds.to_pylist()
        onlines, offlines = cols.online.tolist(), cols.offline.tolist()
        group_ttl = group.ttl.seconds if group.ttl is not None else None
        states, last_seen, changed = self.states, self.last_seen, self.recent.changed
        put: bytes | Mapping[str, Any] | None
        for i in range(n):  # one body for both paths, inline: this loop runs once per topic record
            p, o = partitions[i], offsets[i]
            if fast[i]:
                rid, event_time_ns, delete, online, offline = ids[i], times[i], deletes[i], onlines[i], offlines[i]
                hard, ttl, put = hards[i], None if delete else ttls[i], None if delete else values[i]
            else:
                msg = decode_checked(group, RawMessage(self.topic, p, o, keys[i], values[i], headers[i]))
                if msg is None:
                    self.poison.setdefault(p, set()).add(o)
                    continue
                rid, event_time_ns, delete = msg.id, msg.event_time_ns, not isinstance(msg, PutMessage)
                online, offline = ONLINE in msg.target_stores, OFFLINE in msg.target_stores
                if isinstance(msg, PutMessage):
                    hard, ttl, put = False, msg.ttl_seconds, msg.record
                else:
                    hard, ttl, put = msg.mode == HARD_DELETE, None, None
            last_seen[rid] = (p, o)
            changed(rid)
            if not offline:
                self.not_targeted.setdefault(p, set()).add(o)
            if not online:
                states.setdefault(rid, None)
                continue
            key = VersionKey(event_time_ns, p, o)
            current = states.get(rid)
            step = fold_step(None if current is None else current.key, key, "delete" if delete else "put", hard=hard)
            if step is Step.KEEP:
                continue
            if step is Step.REMOVE:
                states[rid] = None
                continue
            states[rid] = Latest(key, put if step is Step.PUT else None, expires_at_ns(event_time_ns, ttl, group_ttl),
                                 group)

    def position(self, rid: str) -> tuple[int, int] | None:
        """(partition, offset) of the version the online store must hold for ``rid`` (None: no key)."""
        latest = self.states.get(rid)
        return None if latest is None else (latest.key.partition, latest.key.offset)

    def state(self, rid: str) -> OnlineState | None:
        """What write_if_newer.lua leaves under ``rid``, its record decoded and checked now."""
        latest = self.states.get(rid)
        if latest is None:
            return None
        put = latest.put
        if put is None or not isinstance(put, bytes):
            return OnlineState(latest.key, None if put is None else dict(put), latest.expires_at_ns)
        raw = RawMessage(self.topic, latest.key.partition, latest.key.offset, None, put, None)
        msg = decode_checked(latest.group, raw)
        if not isinstance(msg, PutMessage):  # the batch decode proved it valid: a bug if this happens
            raise RuntimeError(f"the auditor's fold of {self.topic!r} kept {rid!r}'s put at "
                               f"{raw.partition}:{raw.offset} as valid, but it does not decode as one")
        return OnlineState(latest.key, msg.record, latest.expires_at_ns)
