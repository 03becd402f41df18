"""Replay, backfill and rebuild: re-read a group's topic into a store through the live path's rules.

- :func:`replay_topic` reads a topic (from the start or a time, up to now or a time) with a
  plain consumer in its own throwaway consumer group (assigning partitions, so it never
  disturbs the "online" or "offline" groups), stops at the end offsets it saw when it
  started, and hands batches to an apply function.
- :func:`replay_online` hands them to the online applier (``streams/online/applier.py``), so a
  replay obeys write-if-newer; :func:`rebuild_online` wipes the group's keys first.
- :func:`replay_offline` hands them to the offline applier (``streams/offline/applier.py``),
  starting each partition at the next offset the group's Iceberg table records and committing
  like the sink does, so a replay and a running sink never double a row: whichever commits a
  range first wins, the other is refused and goes on from the table.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from confluent_kafka import Consumer, KafkaException, TopicPartition

from schemas.errors import ServiceUnavailableError, ValidationError
from schemas.group import FeatureGroup
from sinks.offline.catalog import OfflineTables
from sinks.offline.errors import OffsetsMismatchError
from sinks.offline.rotation import RotationPolicy
from sinks.offline.writer import OfflineWriter
from sinks.online.store import OnlineStore
from streams.group_view import GroupView
from streams.kafka_client import FAST_DRAIN, KafkaTarget, confluent_conf
from streams.offline.applier import OfflineApplier
from streams.online.applier import make_online_applier
from streams.online.engine import OnlineSink
from streams.publisher import TopicMissingError
from streams.route import RawMessage, raw_from_confluent


@dataclass
class ReplayResult:
    topic: str
    records: int = 0
    seconds: float = 0.0
    cancelled: bool = False
    ends: dict[int, int] = field(default_factory=dict)  # per partition: the offset the replay stopped before


def replay_topic(bootstrap: KafkaTarget, topic: str, apply_batch: Callable[[list[RawMessage]], object], *,
                 from_ms: int | None = None, to_ms: int | None = None, batch_size: int = 2000,
                 progress: bool = True, timeout_s: float = 10.0,
                 on_progress: Callable[[int, int], None] | None = None,
                 cancelled: Callable[[], bool] | None = None,
                 start_at: Callable[[dict[int, int], dict[int, int]], Mapping[int, int]] | None = None
                 ) -> ReplayResult:
    """Feed ``topic``'s records with broker timestamp in [from_ms, to_ms) to ``apply_batch``.

    ``on_progress(done, total)`` is called after every batch; ``cancelled()`` is asked before
    every batch, and a True answer stops the replay early (``ReplayResult.cancelled``).
    ``start_at`` (offline replay) gets the partitions' low watermarks and the start offsets
    found from ``from_ms``, and returns the start offsets to use instead.
    """
    started = time.perf_counter()
    consumer = Consumer(confluent_conf(bootstrap, {
        "group.id": f"featurestream-replay-{time.time_ns()}", "enable.auto.commit": False,
        "enable.partition.eof": False, "log_level": 0, "fetch.max.bytes": 52_428_800, **FAST_DRAIN}))
    result = ReplayResult(topic)
    bar = None
    try:
        try:
            md = consumer.list_topics(topic=topic, timeout=timeout_s)
        except KafkaException as exc:
            raise ServiceUnavailableError(f"Kafka at {bootstrap} did not answer: {exc}") from exc
        tmd = md.topics.get(topic)
        if tmd is None or tmd.error is not None or not tmd.partitions:
            raise TopicMissingError(f"Kafka topic {topic!r} does not exist on {bootstrap}")
        starts: dict[int, int] = {}
        ends: dict[int, int] = {}
        for p in tmd.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout_s, cached=False)
            starts[p], ends[p] = low, high
        lows = dict(starts)
        for bound, target in ((from_ms, starts), (to_ms, ends)):
            if bound is None:
                continue
            found = consumer.offsets_for_times([TopicPartition(topic, p, bound) for p in tmd.partitions],
                                               timeout=timeout_s)
            for tp in found:
                # -1: no record at/after the time: the partition's end
                target[tp.partition] = tp.offset if tp.offset >= 0 else ends[tp.partition]
        result.ends = dict(ends)
        if start_at is not None:
            starts.update(start_at(lows, dict(starts)))
        todo = {p: (starts[p], ends[p]) for p in tmd.partitions if ends[p] > starts[p]}
        total = sum(e - s for s, e in todo.values())
        if progress and sys.stderr.isatty() and total:
            from tqdm import tqdm

            bar = tqdm(total=total, unit="rec", desc=f"replay {topic}", file=sys.stderr)
        if not todo:
            return result
        consumer.assign([TopicPartition(topic, p, s) for p, (s, _) in todo.items()])
        remaining = dict(todo)
        idle_deadline = time.monotonic() + max(timeout_s, 30.0)
        while remaining:
            if cancelled is not None and cancelled():
                result.cancelled = True
                return result
            msgs = consumer.consume(num_messages=batch_size, timeout=0.5)
            if not msgs:
                if time.monotonic() > idle_deadline:
                    raise ServiceUnavailableError(f"replay of {topic!r} stalled: no records for "
                                                  f"{max(timeout_s, 30.0):.0f} s with {len(remaining)} "
                                                  "partition(s) unfinished")
                continue
            idle_deadline = time.monotonic() + max(timeout_s, 30.0)
            batch = []
            for m in msgs:
                if m.error():
                    raise ServiceUnavailableError(f"replay of {topic!r} failed: {m.error()}")
                p = m.partition()
                if p not in remaining:
                    continue
                if m.offset() < remaining[p][1]:
                    batch.append(raw_from_confluent(m))
                if m.offset() + 1 >= remaining[p][1]:
                    del remaining[p]
            if batch:
                apply_batch(batch)
                result.records += len(batch)
                if bar is not None:
                    bar.update(len(batch))
                if on_progress is not None:
                    on_progress(result.records, total)
        return result
    finally:
        if bar is not None:
            bar.close()
        consumer.close()
        result.seconds = time.perf_counter() - started


# -- online ------------------------------------------------------------------------------------
# An aggregation replay folds each key's events of a batch in one script call, whose fixed cost
# (decoding its config, reading the key's tile marks) is paid once for them all: with 10,000 keys,
# Redis spent 32.5 CPU-µs an event at 2,000 events a batch and 27.2 at 20,000 (measured here).
# 20,000 source events of ~150 bytes are ~3 MB, judged and folded per batch.
AGGREGATE_REPLAY_BATCH = 20_000


def replay_online(bootstrap: KafkaTarget, redis_url: str, prefix: str, group: FeatureGroup, *,
                  offline_uri: str | None = None, from_ms: int | None = None, to_ms: int | None = None,
                  progress: bool = True, batch_size: int | None = None,
                  start_at: Callable[[dict[int, int], dict[int, int]], Mapping[int, int]] | None = None
                  ) -> ReplayResult:
    """Re-apply ``group``'s topic to the online store; write-if-newer makes it idempotent.

    For an aggregation group, its source's topic, folded into that group only (the source's own
    records and other aggregation groups are left alone), in the fold's backfill lane: it folds
    only what the live processor did not, so a replay beside it never counts an event twice
    (sinks/online/aggregate_fold.lua, "Two lanes")."""
    started = time.perf_counter()
    if batch_size is None:
        batch_size = AGGREGATE_REPLAY_BATCH if group.aggregation is not None else 2000
    applier = make_online_applier(bootstrap, redis_url, prefix, offline_uri=offline_uri, stage="replay-online")
    topic = group.topic(prefix)
    if group.aggregation is not None:
        applier.aggregates_only = True
        full = applier.groups
        applier.groups = GroupView(lambda: _only_aggregation(full.all(), group))
        # a clear error now if the source is gone; its current life's topic is the one folded
        topic = _only_aggregation(full.all(), group)[group.aggregation.source].topic(prefix)
    # Through the processor's sink: judging batch n+1 overlaps Redis applying batch n.
    sink = OnlineSink(applier)
    try:
        result = replay_topic(bootstrap, topic, sink.add, from_ms=from_ms, to_ms=to_ms,
                              progress=progress, start_at=start_at, batch_size=batch_size)
        sink.flush_many([])  # the last batch confirmed (or its failure raised) before we say done
        result.seconds = time.perf_counter() - started
        return result
    finally:
        sink.close()
        applier.store.close()
        applier.deadletters.publisher.close()


def _only_aggregation(groups: Mapping[str, FeatureGroup], group: FeatureGroup) -> dict[str, FeatureGroup]:
    """The groups a replay of aggregation group ``group`` routes with: it and its source (only it
    folds the source's events)."""
    from schemas.aggregation_group import source_problem

    agg = groups.get(group.name)
    if agg is None or agg.creation_time != group.creation_time:
        raise ValidationError(f"aggregation group {group.name!r} was deleted during its replay", group=group.name)
    assert agg.aggregation is not None
    source = groups.get(agg.aggregation.source)
    problem = source_problem(agg, source)
    if problem is not None:
        raise ValidationError(problem, group=group.name)
    assert source is not None
    return {source.name: source, agg.name: agg}


def backfill_aggregation(bootstrap: KafkaTarget, redis_url: str, prefix: str, group: FeatureGroup, *,
                         progress: bool = True, settle_s: float = 2.0) -> ReplayResult:
    """Fill a new aggregation group from its source topic's history, while the live processor
    folds new events (the backfill lane never counts one twice).

    Two passes: from the start to the end offsets seen then; then, once ``settle_s`` has passed
    since the group was registered (a processor judges no batch by a view older than 1.5 s:
    OnlineApplier.prepare),
    from there to the end again, for the events that a processor passed over before it knew
    the group."""
    first = replay_online(bootstrap, redis_url, prefix, group, progress=progress)
    wait = group.creation_time + settle_s - time.time()
    if wait > 0:
        time.sleep(wait)
    second = replay_online(bootstrap, redis_url, prefix, group, progress=False,
                           start_at=lambda _lows, _starts: first.ends)
    return ReplayResult(first.topic, first.records + second.records, first.seconds + second.seconds, ends=second.ends)


def rebuild_online(bootstrap: KafkaTarget, redis_url: str, prefix: str, group: FeatureGroup, *,
                   offline_uri: str | None = None, progress: bool = True) -> tuple[int, ReplayResult]:
    """Wipe ``group``'s online keys, then replay its whole topic; returns (keys removed, replay).
    An aggregation group's state is wiped (offsets folded included), then refolded from the source's
    start in the backfill lane: the live lane's new events after the wipe are not counted twice."""
    store = OnlineStore.from_url(redis_url, prefix)
    try:
        removed = store.wipe_group(group)
    finally:
        store.close()
    return removed, replay_online(bootstrap, redis_url, prefix, group, offline_uri=offline_uri, progress=progress)


# -- offline -----------------------------------------------------------------------------------
log = logging.getLogger("featurestream.offline.replay")


@dataclass
class OfflineReplayResult(ReplayResult):
    rows_written: int = 0        # rows this replay committed to the table
    already_present: int = 0     # records before the table's recorded offsets, not read again
    refused: int = 0             # commits refused because a sink committed the range first
    earlier_than_from: int = 0   # records before --from that the table lacked, written anyway
    poison: int = 0


def replay_offline(bootstrap: KafkaTarget, prefix: str, tables: OfflineTables, group: FeatureGroup, *,
                   from_ms: int | None = None, to_ms: int | None = None, progress: bool = True,
                   policy: RotationPolicy | None = None, max_rounds: int = 10) -> OfflineReplayResult:
    """Fill ``group``'s offline table from its topic: what is missing, exactly once.

    The table records, per partition, the next offset it holds; everything before is there.
    So each partition is read from that offset (the beginning if none) to the end offset seen at
    the start (or the first record at/after ``to_ms``) and committed as the sink commits, with
    the same offset check. A sink running meanwhile is fine: if it commits a range first, this
    replay's commit is refused, and the next round starts from the table again. ``from_ms`` can
    not skip records the table lacks (the table's offsets would then claim rows it does not
    hold); records before it that were missing are written too and counted in
    ``earlier_than_from``.
    """
    g = group
    if not g.offline_enabled:
        raise ValidationError(f"feature group {g.name!r} has no offline store (offline_enabled is false); "
                              "replay it with --target online, or create a group with the offline store on",
                              group=g.name)
    topic = g.topic(prefix)
    result = OfflineReplayResult(topic)
    started = time.perf_counter()
    for _ in range(max_rounds):
        refused = _replay_offline_round(bootstrap, prefix, tables, g, topic, result, from_ms=from_ms,
                                        to_ms=to_ms, progress=progress, policy=policy)
        if not refused:
            break
        log.info("%s: a sink committed partition(s) %s first; reading on from the table's offsets",
                 g.name, sorted(refused))
    result.seconds = time.perf_counter() - started
    return result


def _replay_offline_round(bootstrap: KafkaTarget, prefix: str, tables: OfflineTables, g: FeatureGroup, topic: str,
                          result: OfflineReplayResult, *, from_ms: int | None, to_ms: int | None,
                          progress: bool, policy: RotationPolicy | None) -> set[int]:
    writer = OfflineWriter(tables, policy or RotationPolicy(max_records=200_000, max_age_s=1e9))
    applier = OfflineApplier(GroupView(lambda: {g.name: g}), writer, None, prefix, freshness=False)
    refused: set[int] = set()
    partitions: list[int] = []
    first_round = result.records == 0 and not result.refused

    def start_at(lows: dict[int, int], from_starts: dict[int, int]) -> dict[int, int]:
        starts = {}
        for p, low in lows.items():
            recorded = writer.resume(g, topic, p)  # the table's next offset, and the writer starts there
            start = low if recorded is None else recorded
            if first_round:
                result.already_present += max(0, start - low)
                if from_ms is not None and start < from_starts[p]:
                    result.earlier_than_from += from_starts[p] - start
            partitions.append(p)
            starts[p] = start
        return starts

    def flush(p: int) -> None:
        try:
            result.rows_written += applier.flush(topic, p).rows
        except OffsetsMismatchError:
            refused.add(p)
            result.refused += 1

    def apply_batch(batch: Sequence[RawMessage]) -> None:
        todo = [r for r in batch if r.partition not in refused]
        if todo:
            applier.add(todo)
        for t, p in writer.due():
            if t == topic and p not in refused:
                flush(p)

    read = replay_topic(bootstrap, topic, apply_batch, from_ms=from_ms, to_ms=to_ms, progress=progress,
                        start_at=start_at)
    for p in partitions:
        if p not in refused:
            flush(p)  # nothing read since its last flush: commits nothing
    result.records += read.records
    result.poison += applier.poison_count
    return refused
