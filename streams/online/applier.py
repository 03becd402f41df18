"""The online apply step: route a raw batch, write-if-newer into Redis, dead-letter the poison.

Used by the processor (``streams/online/worker.py``, through the apply child) and by replay
and rebuild (``streams/replay.py``) with a plain replay reader instead of faust.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import orjson

from schemas.errors import RecordValidationError
from schemas.group import FeatureGroup
from schemas.messages import Message
from schemas.names import online_key
from schemas.types import ScalarType
from sinks.online.column_args import column_script_calls
from sinks.online.script_calls import ScriptCalls
from sinks.online.status import WriteStatus
from sinks.online.store import OnlineStore, write_script_args
from streams.deadletter import DeadLetters
from streams.freshness import FRESHNESS, BucketCounts, count_batch
from streams.group_view import GroupView
from streams.kafka_client import KafkaTarget
from streams.metrics import ONLINE_METRICS
from streams.online.aggregate_step import AggregateStep, GroupFold
from streams.publisher import Publisher
from streams.registry import Registry
from streams.route import COLUMNS_MIN_ROWS, GroupRows, Poison, RawMessage, route_batch_columns

log = logging.getLogger("featurestream.online")


VIEW_MAX_AGE_S = 1.5  # below backfill_aggregation's settle_s (2 s): see OnlineApplier.prepare


class OnlineApplier:
    """Applies raw batches to Redis: route, write-if-newer, dead-letter the poison. Thread-safe.

    One batch is two steps: :meth:`prepare` (decode the batch into columns, judge it, build every
    Redis script argument: CPU only) and :meth:`execute` (the Redis round trips, the aggregation
    fold, the dead letters). :meth:`apply` runs both; the default engine runs ``prepare`` of the
    next batch while ``execute`` of this one waits on Redis (``streams/online/engine.py``)."""

    def __init__(self, groups: GroupView, prefix: str, store: OnlineStore, deadletters: DeadLetters, *,
                 freshness: bool = False, backfill: bool = False) -> None:
        self.groups = groups
        self.prefix = prefix
        self.store = store
        self.deadletters = deadletters
        self.freshness = freshness  # the live path only: a replay's or a rebuild's records are old by design
        self.aggregate = AggregateStep(store.aggregates, prefix, backfill=backfill)
        # A replay of an aggregation group folds its source's events only, and leaves the source's
        # latest-value records alone (streams/replay.py).
        self.aggregates_only = False
        # A topic's messages fewer than this in a batch are judged per record (streams/route.py)
        self.columns_from = COLUMNS_MIN_ROWS

    def __call__(self, batch: Sequence[RawMessage]) -> ApplySummary:
        """Apply ``batch`` and count the outcome in this process's Prometheus metrics."""
        summary = self.apply(batch)
        record_metrics(summary)
        return summary

    def apply(self, batch: Sequence[RawMessage]) -> ApplySummary:
        """Apply ``batch``; the outcome comes back as counts (picklable: see apply_child)."""
        return self.execute(self.prepare(batch))

    def prepare(self, batch: Sequence[RawMessage], *, now_ns: int | None = None) -> PreparedBatch:
        """Judge ``batch`` (``fs-schema-version`` catch-up included: ``route_batch_columns``) and build
        the script calls of every group, rows in batch order; nothing is written. ``now_ns`` decides
        which puts are already expired (default: this machine's clock)."""
        started = time.perf_counter()
        # Never judge by a view older than this, busy or idle: a backfill's second pass
        # (streams/replay.py, settle_s=2.0) counts on processors knowing a new group by then.
        self.groups.refresh_if_older(VIEW_MAX_AGE_S)
        routed, groups = route_batch_columns(batch, self.groups, prefix=self.prefix, store="OnlineStore",
                                             columns_from=self.columns_from)
        now = time.time_ns() if now_ns is None else now_ns
        # the raw message of a row judged per record (rare: index the batch only then)
        by_coords = {(r.topic, r.partition, r.offset): r for r in batch} if routed.work else {}
        writes = []
        for name in dict.fromkeys([*routed.rows, *routed.work]):
            writes.append(self._group_calls(groups[name], routed.rows.get(name), routed.work.get(name, []), now,
                                            by_coords))
        folds = self.aggregate.prepare(routed.sources, routed.source_rows, groups) \
            if routed.sources or routed.source_rows else []
        return PreparedBatch(batch, groups, writes, list(routed.poison), folds, routed.skipped,
                             time.perf_counter() - started)

    def _group_calls(self, group: FeatureGroup, proven: GroupRows | None, slow: list[tuple[Message, int, int]],
                     now: int, by_coords: Mapping[tuple[str, int, int], RawMessage]) -> GroupWrites:
        """One group's script calls: the proven rows from the columns, the rest message by message
        (rare), merged back into batch order (a hard delete and an older put of one key must meet
        Redis in the order they were written)."""
        calls = ScriptCalls([], [], [])
        raws: list[RawMessage] = []
        api: list[int] | np.ndarray = []
        rejected: list[Poison] = []
        if proven is not None:
            texts = _event_time_texts(group, proven) if group.event_time.type is ScalarType.FRACTIONAL else None
            calls = column_script_calls(group, proven.columns, proven.rows, proven.partitions, proven.offsets,
                                        prefix=self.prefix, now_ns=now, event_time_texts=texts)
            raws = [proven.raws[j] for j in proven.rows]
            api = proven.api_invocation_time_ns
        if not slow:
            return GroupWrites(group, calls, raws, api, rejected)
        topic = group.topic(self.prefix)
        # each call's place in the topic's messages (batch order), to merge the two kinds back
        index = {(r.partition, r.offset): j for j, r in enumerate(proven.raws)} if proven is not None else {}
        entries = [(int(j), k) for k, j in enumerate(proven.rows)] if proven is not None else []
        singles = ScriptCalls([], [], [])
        single_raws: list[RawMessage] = []
        single_api: list[int] = []
        for msg, partition, offset in slow:
            raw = by_coords[(topic, partition, offset)]
            try:
                args = write_script_args(group, msg, partition, offset, now, checked=True)
            except RecordValidationError as exc:
                log.warning("%s: record %r at %s/%d/%d not applied: %s", group.name, msg.id, topic, partition,
                            offset, exc)
                rejected.append(Poison(raw, str(exc)))
                continue
            entries.append((index.get((partition, offset), -1), len(calls) + len(singles)))
            singles.add(msg.id, online_key(self.prefix, group.name, msg.id), args)
            single_raws.append(raw)
            single_api.append(msg.api_invocation_time_ns)
        calls.extend(singles)
        raws += single_raws
        api_all = [*np.asarray(api, dtype=np.int64).tolist(), *single_api]
        if proven is not None and len(singles):
            order = [k for _j, k in sorted(entries)]
            calls = calls.reorder(order)
            raws = [raws[k] for k in order]
            api_all = [api_all[k] for k in order]
        return GroupWrites(group, calls, raws, api_all, rejected)

    def execute(self, prepared: PreparedBatch) -> ApplySummary:
        """Write ``prepared`` to Redis, fold its aggregation sources, dead-letter its poison; returns
        once every write is confirmed (or raises: then nothing of the batch may be committed)."""
        started = time.perf_counter()
        summary = ApplySummary()
        poison = list(prepared.poison)
        # A replay of an aggregation group folds its source's events only (aggregates_only).
        for w in ([] if self.aggregates_only else prepared.writes):
            name = w.group.name
            poison += w.rejected
            if w.rejected:
                summary.records[(name, WriteStatus.REJECTED.value)] = len(w.rejected)
            if not len(w.calls):
                continue
            result = self.store.apply_script_calls(w.group, w.calls)
            if self.freshness:
                fresh = count_batch(w.api_invocation_time_ns, time.time_ns())
                if fresh is not None:
                    summary.freshness[name] = fresh
            for status, n in result.counts.items():
                summary.records[(name, status.value)] = summary.records.get((name, status.value), 0) + n
            if result.rejected:  # rare
                topic = w.group.topic(self.prefix)
                for k, status in enumerate(result.statuses):
                    if status is WriteStatus.REJECTED:
                        rid = w.calls.ids[k]
                        raw = w.raws[k]
                        reason = next((r for i, r in result.rejected if i == rid), "rejected")
                        log.warning("%s: record %r at %s/%d/%d not applied: %s", name, rid, topic, raw.partition,
                                    raw.offset, reason)
                        poison.append(Poison(raw, reason))
        if prepared.folds:  # sources of aggregation groups: fold their events (aggregate_step.py)
            counts, late = self.aggregate.fold(prepared.folds, prepared.batch)
            for key, n in counts.items():
                summary.records[key] = summary.records.get(key, 0) + n
            poison += late
        summary.skipped = prepared.skipped
        if poison:
            self.deadletters.send(poison)
            summary.dead_lettered = len(poison)
        summary.seconds = prepared.seconds + time.perf_counter() - started
        return summary


@dataclass
class GroupWrites:
    """One group's share of a prepared batch: script calls, and per call its raw message (for a
    dead letter) and publish time (freshness); ``rejected``: refused before Redis."""

    group: FeatureGroup
    calls: ScriptCalls
    raws: list[RawMessage]
    api_invocation_time_ns: Sequence[int] | np.ndarray
    rejected: list[Poison]


@dataclass
class PreparedBatch:
    """A batch judged and turned into script calls (:meth:`OnlineApplier.prepare`), not yet written."""

    batch: Sequence[RawMessage]
    groups: Mapping[str, FeatureGroup]
    writes: list[GroupWrites]
    poison: list[Poison]
    folds: list[GroupFold]  # each aggregation group's events of the batch, ready to fold
    skipped: int
    seconds: float


def _event_time_texts(group: FeatureGroup, proven: GroupRows) -> list[str | None]:
    """A Fractional event time's JSON text as each message gave it (the columns hold doubles, and the
    validator keeps an integer as an integer): read from the messages, one per row."""
    name = group.event_time_name
    texts: list[str | None] = []
    for j, delete in zip(proven.rows, proven.columns.is_delete[proven.rows], strict=True):
        texts.append(None if delete else orjson.dumps(orjson.loads(proven.raws[j].value)["record"][name]).decode())
    return texts


@dataclass
class ApplySummary:
    """What one batch did: ``records[(group, status)] = count``, plus the skipped and poison counts."""

    records: dict[tuple[str, str], int] = field(default_factory=dict)
    skipped: int = 0
    dead_lettered: int = 0
    seconds: float = 0.0
    freshness: dict[str, BucketCounts] = field(default_factory=dict)  # group -> publish-to-applied latencies


def record_metrics(summary: ApplySummary) -> None:
    for (group, status), n in summary.records.items():
        ONLINE_METRICS.records.labels(group=group, status=status).inc(n)
    if summary.skipped:
        ONLINE_METRICS.records.labels(group="", status="skipped").inc(summary.skipped)
    if summary.dead_lettered:
        ONLINE_METRICS.dead_lettered.inc(summary.dead_lettered)
    ONLINE_METRICS.batch_seconds.observe(summary.seconds)
    for group, counts in summary.freshness.items():
        FRESHNESS.add("online", group, counts)


def make_online_applier(bootstrap: KafkaTarget, redis_url: str, prefix: str, *, offline_uri: str | None = None,
                        stage: str = "online") -> OnlineApplier:
    """An applier with its own registry view, Redis client and dead-letter producer."""
    registry = Registry(bootstrap, prefix=prefix, offline_base_uri=offline_uri)
    store = OnlineStore.from_url(redis_url, prefix)
    deadletters = DeadLetters(Publisher(bootstrap), prefix, stage)
    # Anything but the live path (replay, rebuild, the healer) folds aggregates in the backfill lane.
    return OnlineApplier(GroupView(registry.refresh), prefix, store, deadletters, freshness=stage == "online",
                         backfill=stage != "online")
