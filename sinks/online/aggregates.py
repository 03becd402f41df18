"""Aggregation groups in Redis: fold source events into time tiles (``aggregate_fold.lua``) and
compute the aggregates at read time.

Layout, per aggregation key (``schemas.names.aggregate_key``; hash tag = group + key, never a
group-wide tag, so keys spread over a Redis Cluster):

| hash field | value |
| --- | --- |
| ``o|<partition>`` | last source offset the live lane folded from that partition (redeliveries are no-ops) |
| ``s|<partition>`` | first source offset the live lane folded from that partition |
| ``w|<partition>`` | latest event time (ns) the live lane folded from that partition (the lateness mark) |
| ``b|<partition>``, ``v|<partition>`` | the same as ``o|`` and ``w|`` for the backfill lane (replay, rebuild) |
| ``k|<level>`` | first tile index of that level still read (older tiles are pruned) |
| ``late`` | events refused as later than the allowed lateness (also dead-lettered) |
| ``life`` | which life of the group's name the key holds: its creation time in µs (``FeatureGroup.life``) |
| ``<kind>|<feature>|<level>|<index>`` | one tile's state (kinds: ``schemas/aggregate_values.py``) |
| ``d|<feature>|<level>|<index>`` | ``1``: the tile's HyperLogLog is the key ``<hash key>|d|...`` |

Without a lifetime aggregate the key (and each sketch) expires a day after the longest window's
retention has passed since its last fold.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import orjson
import redis
from redis.exceptions import NoScriptError, RedisClusterException

from schemas.aggregate_plan import FoldPlan, State
from schemas.aggregate_values import (
    KIND_COUNT,
    KIND_DISTINCT,
    KIND_INTEGRAL,
    KIND_LAST,
    LastItem,
    NumericTile,
    last_value,
    numeric_value,
)
from schemas.aggregation import Aggregate, Function
from schemas.errors import ServiceUnavailableError
from schemas.eventtime import format_iso
from schemas.group import FeatureGroup
from schemas.messages import Message
from schemas.names import aggregate_key, online_key_pattern
from schemas.tiles import MINUTE_NS
from schemas.types import ScalarType
from sinks.online.aggregate_columns import FoldEvent, message_fold_events
from sinks.online.codec import of_life
from sinks.online.connect import RedisClient
from sinks.online.errors import CorruptRecordError
from sinks.online.lua import load_script

FOLDED, DUPLICATE, SUPERSEDED, LATE = 1, 3, 4, 10
EVENTS_PER_CALL = 500  # bounds how long one script call holds Redis
# Bounds the Redis work behind one pipelined round trip. A replay batch holds 20,000 events, about
# 4 MB of calls and seconds of Redis CPU: sent as one pipeline, the client's write waited for Redis
# to work through the socket buffers and timed out (2 s) on a loaded machine. At 1,000 events a
# round trip is about 200 KB and 0.08-0.15 s of Redis CPU (the fold costs 80-150 us an event, README).
EVENTS_PER_ROUND_TRIP = 1000
_SERVICE_ERRORS = (redis.ConnectionError, redis.TimeoutError, RedisClusterException)


@dataclass
class FoldResult:
    """``counts``: folded / duplicate / late / ignored (a delete, or no key value) / superseded (the
    group was deleted and created again: the events were for its earlier life); ``late``: the items
    refused as too late, as (index in the batch, the reason)."""

    counts: dict[str, int] = field(default_factory=dict)
    late: list[tuple[int, str]] = field(default_factory=list)

    def add(self, what: str, n: int = 1) -> None:
        self.counts[what] = self.counts.get(what, 0) + n


class AggregateReads:
    """Read planning for aggregation groups, without I/O: the blocking store and the event-loop
    reader (``async_reads.py``) both send what :meth:`read` plans and decode with it."""

    def __init__(self, prefix: str) -> None:
        self._prefix = prefix
        self._plans: dict[tuple[str, int, float], FoldPlan] = {}
        # The fields a window reads change once a minute (schemas/tiles.py: a read at T depends on T
        # only through ceil_minute(T)), and listing up to 171 tiles per aggregate was most of a read's
        # CPU: keep the current minute's lists. Replaced, never mutated, when the minute moves on.
        self._fields: tuple[int, dict[tuple[State, int | None], list[str]]] = (-1, {})

    def plan(self, group: FeatureGroup) -> FoldPlan:
        key = (group.name, group.version, group.creation_time)
        found = self._plans.get(key)
        if found is None:
            found = self._plans[key] = FoldPlan.of(group)
        return found

    def read(self, group: FeatureGroup, keys: Sequence[str], names: Sequence[str] | None, *,
             now_ns: int | None = None) -> AggregateRead:
        plan = self.plan(group)
        t = time.time_ns() if now_ns is None else now_ns
        aggs = plan.aggregates(names)
        field_lists = {a.output_name: self._fields_of(plan, a, t) for a in aggs if a.function is not Function.DISTINCT}
        return AggregateRead(self._prefix, group, plan, list(keys), names, t, aggs, field_lists)

    def _fields_of(self, plan: FoldPlan, agg: Aggregate, t_ns: int) -> list[str]:
        """``plan.fields_of(agg, t_ns)``, one list object per (state, window) and minute: the functions
        over one feature and window share it, so a read parses their tiles once (``AggregateRead``)."""
        minute = -(-t_ns // MINUTE_NS)
        at, lists = self._fields
        if at != minute:
            lists = {}
            self._fields = (minute, lists)
        key = (plan.state_of(agg), agg.window_ns)
        found = lists.get(key)
        if found is None:
            found = lists[key] = plan.fields_of(agg, t_ns)
        return found


@dataclass
class AggregateRead:
    """One read of aggregation keys at time ``t``: :meth:`queue` its commands on a pipeline (blocking
    or asyncio), then :meth:`decode` the pipeline's replies."""

    prefix: str
    group: FeatureGroup
    plan: FoldPlan
    keys: list[str]
    names: Sequence[str] | None
    t: int
    aggs: list
    field_lists: dict[str, list[str]]

    def __post_init__(self) -> None:
        lists = {id(fs): fs for fs in self.field_lists.values()}  # shared per (state, window): each once
        self.fields = list(dict.fromkeys(f for fs in lists.values() for f in fs))
        self.distinct = [a for a in self.aggs if a.function is Function.DISTINCT]
        self.output_names = [a.output_name for a in self.aggs]  # a property that formats: once per read

    @property
    def action(self) -> str:
        return f"read {len(self.keys)} keys of aggregation group {self.group.name!r}"

    def queue(self, pipe: Any) -> None:
        for k in self.keys:
            hk = aggregate_key(self.prefix, self.group.name, k)
            pipe.exists(hk)
            pipe.hget(hk, "life")
            if self.fields:
                pipe.hmget(hk, self.fields)
            for a in self.distinct:
                pipe.pfcount(*(f"{hk}|{f}" for f in self.plan.fields_of(a, self.t)))

    def decode(self, replies: Sequence[Any]) -> list[dict[str, Any] | None]:
        """None for a key with no state, or only another life's (a group of this name deleted, or this
        read's view of the group older than the key). Count and sum of an empty window are 0; other
        empty ones absent."""
        it = iter(replies)
        out: list[dict[str, Any] | None] = []
        for k in self.keys:
            exists = next(it)
            held = next(it)
            raw = dict(zip(self.fields, next(it), strict=True)) if self.fields else {}
            counts = {a.output_name: next(it) for a in self.distinct}
            if not exists or not of_life(self.group, held):
                out.append(None)
                continue
            record = self._record(k, raw, counts)
            if self.names is not None:  # like a plain group's read: only the features asked for
                record = {n: record[n] for n in self.names if n in record}
            out.append(record)
        return out

    def _record(self, k: str, raw: dict, counts: dict) -> dict[str, Any]:
        group, plan, t, aggs, field_lists = self.group, self.plan, self.t, self.aggs, self.field_lists
        spec = group.aggregation
        assert spec is not None
        key_type = group.record_identifier.type
        record: dict[str, Any] = {spec.by: int(k) if key_type is ScalarType.INTEGRAL else k,
                                  group.event_time_name: format_iso(t) if group.event_time.type is ScalarType.STRING
                                  else t / 1e9}
        # The functions over one feature and window read the same fields (one list object:
        # AggregateReads._fields_of), and windows overlap: parse each field once per read, and gather
        # each list's tiles once.
        parsed: dict[str, Any] = {}
        gathered: dict[int, tuple[list[Any], int]] = {}  # per field list: its tiles and their event count
        for a, name in zip(aggs, self.output_names, strict=True):
            if a.function is Function.DISTINCT:
                value: Any = counts[name]
            else:
                state = plan.state_of(a)
                fields = field_lists[name]
                try:
                    found = gathered.get(id(fields))
                    if found is None:
                        tiles = _gather(fields, raw, parsed, state)
                        found = gathered[id(fields)] = (tiles, 0 if state.kind == KIND_LAST else
                                                        sum(t.n for t in tiles))
                    tiles, n = found
                    if state.kind == KIND_LAST:
                        value = last_value(a, tiles)
                    else:
                        value = numeric_value(a, tiles, state.kind in (KIND_INTEGRAL, KIND_COUNT), n=n)
                except (ValueError, TypeError, IndexError) as exc:
                    raise CorruptRecordError(
                        f"aggregation group {group.name!r}, key {k!r}: a tile of {name!r} is not in the "
                        f"fold script's format ({exc}); wipe and rebuild the group", group=group.name,
                        record_id=k) from exc
            if value is not None:
                record[name] = value
        return record


def _round_trips(calls: list[tuple[str, list[tuple[int, bytes]]]], events_per_trip: int
                 ) -> Iterator[list[tuple[str, list[tuple[int, bytes]]]]]:
    """``calls`` in order, cut into runs of whole calls holding at most ``events_per_trip`` events
    (a single larger call goes alone). A key's calls stay in order, so its events fold in order."""
    trip: list[tuple[str, list[tuple[int, bytes]]]] = []
    held = 0
    for call in calls:
        if trip and held + len(call[1]) > events_per_trip:
            yield trip
            trip, held = [], 0
        trip.append(call)
        held += len(call[1])
    if trip:
        yield trip


class AggregateStore:
    def __init__(self, client: RedisClient, prefix: str, *, where: str = "Redis") -> None:
        self._client = client
        self._prefix = prefix
        self._where = where
        self._script = load_script("aggregate_fold.lua")
        self._sha = hashlib.sha1(self._script.encode("utf-8")).hexdigest()
        self.reads = AggregateReads(prefix)

    def plan(self, group: FeatureGroup) -> FoldPlan:
        return self.reads.plan(group)

    # ------------------------------------------------------------------ fold

    def fold(self, group: FeatureGroup, items: Sequence[tuple[Message, int, int]], *,
             backfill: bool = False) -> FoldResult:
        """Fold source messages ``(message, partition, offset)`` (each partition's in offset order).
        ``backfill``: in the backfill lane (a replay or rebuild beside the live processor): it folds
        only what the live lane did not (aggregate_fold.lua, "Two lanes")."""
        return self.fold_events(group, message_fold_events(self.plan(group), list(items)), backfill=backfill)

    def fold_events(self, group: FeatureGroup, events: Sequence[FoldEvent], *, backfill: bool = False) -> FoldResult:
        """Fold ``events`` (built from messages or from a batch's columns: ``aggregate_columns.py``;
        each partition's in offset order). ``FoldResult.late`` indexes ``events``."""
        plan = self.plan(group)
        result = FoldResult()
        by_key: dict[str, list[tuple[int, bytes]]] = {}
        for i, event in enumerate(events):
            k = event.key
            if k is None:
                result.add("ignored")
                continue
            found = by_key.get(k)
            if found is None:
                by_key[k] = [(i, event.arg)]
            else:
                found.append((i, event.arg))
        if not by_key:
            return result
        config = plan.config_arg(backfill=backfill)
        calls = [(k, mine[j:j + EVENTS_PER_CALL]) for k, mine in by_key.items()
                 for j in range(0, len(mine), EVENTS_PER_CALL)]
        for trip in _round_trips(calls, EVENTS_PER_ROUND_TRIP):
            self._fold_calls(group, events, config, trip, result)
        return result

    def _fold_calls(self, group: FeatureGroup, events: Sequence[FoldEvent], config: bytes,
                    calls: list[tuple[str, list[tuple[int, bytes]]]], result: FoldResult) -> None:
        """One pipelined round trip of fold script calls; their outcomes go into ``result``."""
        for _attempt in range(2):
            pipe = self._client.pipeline(transaction=False)
            for k, chunk in calls:
                pipe.execute_command("EVALSHA", self._sha, 1, aggregate_key(self._prefix, group.name, k), config,
                                     *(arg for _i, arg in chunk))
            with self._service(f"fold {sum(len(c) for _k, c in calls)} events into aggregation group "
                               f"{group.name!r}"):
                replies = pipe.execute(raise_on_error=False)
            retry = []
            for (k, chunk), reply in zip(calls, replies, strict=True):
                if isinstance(reply, NoScriptError):
                    retry.append((k, chunk))
                    continue
                if isinstance(reply, Exception):
                    raise ServiceUnavailableError(f"{self._where} failed folding events of key {k!r} into "
                                                  f"aggregation group {group.name!r}: {reply}") from reply
                for (i, _arg), code, detail in zip(chunk, reply[0::2], reply[1::2], strict=True):
                    if code == FOLDED:
                        result.add("folded")
                    elif code == DUPLICATE:
                        result.add("duplicate")
                    elif code == SUPERSEDED:
                        result.add("superseded")
                    else:
                        result.add("late")
                        latest = int(detail)
                        result.late.append((i, (
                            f"aggregation group {group.name!r}, key {k!r}: event time "
                            f"{format_iso(events[i].event_time_ns)} is more than the allowed lateness "
                            f"({group.aggregation.lateness_ns // 1_000_000_000} s) behind the latest event time "  # type: ignore[union-attr]
                            f"{format_iso(latest)} of this key in partition {events[i].partition}; not counted")))
            if not retry:
                return
            with self._service("load the aggregate_fold script"):
                self._sha = self._client.script_load(self._script)
            calls = retry
        raise ServiceUnavailableError(f"{self._where} keeps answering NOSCRIPT for the aggregate_fold script")

    # ------------------------------------------------------------------ reads

    def get_records(self, group: FeatureGroup, keys: Sequence[str], names: Sequence[str] | None, *,
                    now_ns: int | None = None) -> list[dict[str, Any] | None]:
        """Each key's aggregates at ``now_ns`` (default: this machine's clock), in one round trip;
        None for a key with no state. Count and sum of an empty window are 0; other empty ones absent."""
        read = self.reads.read(group, keys, names, now_ns=now_ns)
        pipe = self._client.pipeline(transaction=False)
        read.queue(pipe)
        with self._service(read.action):
            replies = pipe.execute()
        return read.decode(replies)

    def wipe_group(self, group: FeatureGroup | str) -> int:
        """Remove every key of an aggregation group (SCAN + UNLINK on every node)."""
        name = group.name if isinstance(group, FeatureGroup) else group
        removed = 0
        with self._service(f"wipe aggregation group {name!r}"):
            keys = list(self._client.scan_iter(match=online_key_pattern(self._prefix, name), count=1000))
            for i in range(0, len(keys), 500):
                pipe = self._client.pipeline(transaction=False)
                for key in keys[i:i + 500]:
                    pipe.unlink(key)
                removed += sum(pipe.execute())
        return removed

    def late_count(self, group: FeatureGroup, key: str) -> int:
        """How many events of ``key`` were refused as too late (and dead-lettered); 0 for a key that
        holds another life's state."""
        with self._service(f"read key {key!r} of aggregation group {group.name!r}"):
            late, life = self._client.hmget(aggregate_key(self._prefix, group.name, key), ["late", "life"])
        if not of_life(group, life):
            return 0
        return int(late or 0)

    @contextmanager
    def _service(self, action: str) -> Iterator[None]:
        try:
            yield
        except _SERVICE_ERRORS as exc:
            raise ServiceUnavailableError(f"{self._where} did not answer while trying to {action} ({exc})") from exc


def _gather(fields: Sequence[str], raw: dict[str, bytes | None], parsed: dict[str, Any], state: State) -> list[Any]:
    """The parsed tiles of ``fields`` that hold state, parsing each field at most once per read."""
    parse = _last_items if state.kind == KIND_LAST else partial(_numeric_tile, state)
    tiles = []
    for f in fields:
        tile = parsed.get(f)
        if tile is None:
            text = raw[f]
            if text is None:
                continue
            tile = parsed[f] = parse(text)
        tiles.append(tile)
    return tiles


def _numeric_tile(state: State, raw: bytes) -> NumericTile:
    parts = raw.split(b" ")  # int() and float() read ASCII bytes as they read text
    if state.kind == KIND_COUNT:
        return NumericTile(int(parts[0]))
    if state.kind == KIND_INTEGRAL:
        n, s, q, low, high = parts
        return NumericTile(int(n), int(s), 0.0, int(q), low=int(low), high=int(high))
    n, s, c, mean, m2, low, high = parts
    return NumericTile(int(n), float(s), float(c), 0, float(mean), float(m2), float(low), float(high))


def _last_items(raw: bytes) -> list[LastItem]:
    flat = orjson.loads(raw)
    return [(int(flat[i]), int(flat[i + 1]), int(flat[i + 2]), orjson.loads(flat[i + 3]))
            for i in range(0, len(flat), 4)]


__all__ = ["KIND_DISTINCT", "AggregateRead", "AggregateReads", "AggregateStore", "FoldResult"]
