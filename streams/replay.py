"""Replay, backfill and rebuild: re-read a group's topic into a store through the live path's rules.

- :func:`replay_topic` reads a topic (from the start or a time, up to now or a time) with a
  plain consumer in its own throwaway consumer group (assigning partitions, so it never
  disturbs the "online" or "offline" groups), stops at the end offsets it saw when it
  started, and hands batches to an apply function.
- :func:`replay_online` hands them to the online applier (``streams/online/applier.py``), so a
  replay obeys write-if-newer; :func:`rebuild_online` wipes the group's keys first.
- :func:`replay_offline` hands them to the offline applier (``streams/offline/applier.py``),
  adding only the offsets the table does not hold yet.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow.compute as pc
from confluent_kafka import Consumer, KafkaException, TopicPartition

from schemas.errors import ServiceUnavailableError, ValidationError
from schemas.group import FeatureGroup
from schemas.names import group_topic
from sinks.offline.catalog import read_live_table
from sinks.offline.fs import open_filesystem
from sinks.offline.rotation import RotationPolicy
from sinks.offline.rows import KAFKA_OFFSET, KAFKA_PARTITION, KAFKA_TOPIC
from sinks.offline.writer import OfflineWriter, table_path_for
from sinks.online.store import OnlineStore
from streams.group_view import GroupView
from streams.lag import committed_offsets
from streams.offline.applier import OfflineApplier
from streams.offline.compactor import retire_empty_manifests
from streams.offline.consumer import TP, consumer_group_id
from streams.online.applier import make_online_applier
from streams.publisher import TopicMissingError
from streams.route import RawMessage, raw_from_confluent


@dataclass
class ReplayResult:
    topic: str
    records: int = 0
    seconds: float = 0.0
    cancelled: bool = False


def replay_topic(bootstrap: str, topic: str, apply_batch: Callable[[list[RawMessage]], object], *,
                 from_ms: int | None = None, to_ms: int | None = None, batch_size: int = 2000,
                 progress: bool = True, timeout_s: float = 10.0,
                 on_progress: Callable[[int, int], None] | None = None,
                 cancelled: Callable[[], bool] | None = None) -> ReplayResult:
    """Feed ``topic``'s records with broker timestamp in [from_ms, to_ms) to ``apply_batch``.

    ``on_progress(done, total)`` is called after every batch; ``cancelled()`` is asked before
    every batch, and a True answer stops the replay early (``ReplayResult.cancelled``).
    """
    started = time.perf_counter()
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"featurestream-replay-{time.time_ns()}",
                         "enable.auto.commit": False, "enable.partition.eof": False, "log_level": 0,
                         "fetch.max.bytes": 52_428_800})
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
        for bound, target in ((from_ms, starts), (to_ms, ends)):
            if bound is None:
                continue
            found = consumer.offsets_for_times([TopicPartition(topic, p, bound) for p in tmd.partitions],
                                               timeout=timeout_s)
            for tp in found:
                # -1: no record at/after the time: the partition's end
                target[tp.partition] = tp.offset if tp.offset >= 0 else ends[tp.partition]
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
def replay_online(bootstrap: str, redis_url: str, prefix: str, group: FeatureGroup, *,
                  offline_uri: str | None = None, from_ms: int | None = None, to_ms: int | None = None,
                  progress: bool = True) -> ReplayResult:
    """Re-apply ``group``'s topic to the online store; write-if-newer makes it idempotent."""
    applier = make_online_applier(bootstrap, redis_url, prefix, offline_uri=offline_uri, stage="replay-online")
    try:
        return replay_topic(bootstrap, group_topic(prefix, group.name), applier, from_ms=from_ms, to_ms=to_ms,
                            progress=progress)
    finally:
        applier.store.close()
        applier.deadletters.publisher.close()


def rebuild_online(bootstrap: str, redis_url: str, prefix: str, group: FeatureGroup, *,
                   offline_uri: str | None = None, progress: bool = True) -> tuple[int, ReplayResult]:
    """Wipe ``group``'s online keys, then replay its whole topic; returns (keys removed, replay)."""
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
    rows_written: int = 0
    already_present: int = 0
    left_to_sink: int = 0   # at/after the live sink's committed offset: the sink writes those
    poison: int = 0


def present_offsets(fs: Any, table_uri: str, topic: str) -> dict[int, np.ndarray]:
    """Sorted Kafka offsets per partition of ``topic`` already in the table's live files.

    Reads three columns only (a Parquet projection), so it stays cheap next to the rows.
    """
    table = read_live_table(fs, table_uri, columns=[KAFKA_TOPIC, KAFKA_PARTITION, KAFKA_OFFSET])
    if table.num_rows == 0:
        return {}
    table = table.filter(pc.equal(table[KAFKA_TOPIC], topic))
    parts = table[KAFKA_PARTITION].to_numpy()
    offsets = table[KAFKA_OFFSET].to_numpy()
    return {int(p): np.unique(offsets[parts == p]) for p in np.unique(parts)}


def replay_offline(bootstrap: str, prefix: str, offline_uri: str, group: FeatureGroup, *,
                   storage_options: Mapping[str, Any] | None = None, from_ms: int | None = None,
                   to_ms: int | None = None, progress: bool = True,
                   policy: RotationPolicy | None = None) -> OfflineReplayResult:
    """Re-read ``group``'s topic into the offline store, adding only rows that are missing.

    Idempotent even after compaction merged and deleted the original files: offsets already
    in the live files are skipped (read from the ``_kafka_*`` columns, not inferred from file
    names). Offsets at or after the live sink's committed offset are left to the sink: it
    rewrites those under its own file names, and a replay file there could later be
    replaced by one of the sink's with a different range. Not safe against two replays of
    one group at the same time.
    """
    g = group
    if not g.offline_enabled:
        raise ValidationError(f"feature group {g.name!r} has no offline store (offline_enabled is false); "
                              "replay it with --target online, or create a group with the offline store on",
                              group=g.name)
    fs, root = open_filesystem(offline_uri, dict(storage_options or {}))
    topic = group_topic(prefix, g.name)
    table = table_path_for(fs, root, g)
    committed = committed_offsets(bootstrap, consumer_group_id(prefix), [topic])
    retire_empty_manifests(fs, table)
    present = present_offsets(fs, table, topic)
    writer = OfflineWriter(fs, root, policy or RotationPolicy(max_age_s=1e9))
    counts = {"present": 0, "left": 0}
    applier = OfflineApplier(GroupView(lambda: {g.name: g}), writer, None, prefix)

    def apply_batch(batch: Sequence[RawMessage]) -> None:
        todo = not_yet_written(batch, committed, present, counts)
        if todo:
            applier.add(todo)
        for t, p in writer.due():
            _flush_counted(applier, t, p, result)

    result = OfflineReplayResult(topic)
    read = replay_topic(bootstrap, topic, apply_batch, from_ms=from_ms, to_ms=to_ms, progress=progress)
    for t, p in applier.held():
        _flush_counted(applier, t, p, result)
    result.records, result.seconds = read.records, read.seconds
    result.already_present, result.left_to_sink = counts["present"], counts["left"]
    result.poison = applier.poison_count
    if result.left_to_sink:
        log.info("%s: %d records at/after the offline sink's committed offsets were left to the sink",
                 g.name, result.left_to_sink)
    return result


def not_yet_written(batch: Sequence[RawMessage], committed: Mapping[TP, int], present: Mapping[int, np.ndarray],
             counts: dict[str, int]) -> list[RawMessage]:
    """The messages of ``batch`` below the sink's committed offset and not yet in the table."""
    out = []
    by_part: dict[int, list[RawMessage]] = {}
    for r in batch:
        if r.offset >= committed.get((r.topic, r.partition), 0):
            counts["left"] += 1
        else:
            by_part.setdefault(r.partition, []).append(r)
    for p, raws in by_part.items():
        have = present.get(p)
        if have is None or not len(have):
            out += raws
            continue
        found = np.isin(np.fromiter((r.offset for r in raws), dtype=np.int64, count=len(raws)), have,
                        assume_unique=False)
        counts["present"] += int(found.sum())
        out += [r for r, f in zip(raws, found, strict=True) if not f]
    out.sort(key=lambda r: (r.partition, r.offset))
    return out


def _flush_counted(applier: OfflineApplier, topic: str, partition: int, result: OfflineReplayResult) -> None:
    result.rows_written += applier.flush(topic, partition).rows

