"""`featurestream replay GROUP --target offline`: re-read a topic into the offline table, idempotently.

Offsets already in the table are skipped, even after compaction merged and deleted the files
they were first written in (coordinate-named files alone cannot protect those), so replaying
what is already there adds no rows. Only offsets the sink has committed are written; the rest
is left to the running sink.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow.compute as pc

from featurestream.offline_worker import OfflineApplier, retire_empty_manifests
from schemas.errors import ValidationError
from schemas.group import FeatureGroup
from schemas.names import group_topic
from sinks.offline.catalog import read_live_table
from sinks.offline.fs import open_filesystem
from sinks.offline.rotation import RotationPolicy
from sinks.offline.rows import KAFKA_OFFSET, KAFKA_PARTITION, KAFKA_TOPIC
from sinks.offline.writer import OfflineWriter, table_path_for
from streams.lag import committed_offsets
from streams.replay import ReplayResult, replay_topic
from streams.route import RawMessage
from streams.sink_consumer import TP, consumer_group_id

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


def replay_offline(store: Any, group: FeatureGroup | str, *, from_ms: int | None = None,
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
    config = store.config
    g = group if isinstance(group, FeatureGroup) else store.describe_feature_group(group)
    if not g.offline_enabled:
        raise ValidationError(f"feature group {g.name!r} has no offline store (offline_enabled is false); "
                              "replay it with --target online, or create a group with the offline store on",
                              group=g.name)
    bootstrap = config.require("kafka_bootstrap")
    fs, root = open_filesystem(config.require("offline_uri"), config.storage_options())
    topic = group_topic(config.topic_prefix, g.name)
    table = table_path_for(fs, root, g)
    committed = committed_offsets(bootstrap, consumer_group_id(config.topic_prefix), [topic])
    retire_empty_manifests(fs, table)
    present = present_offsets(fs, table, topic)
    writer = OfflineWriter(fs, root, policy or RotationPolicy(max_age_s=1e9))
    counts = {"present": 0, "left": 0}
    applier = OfflineApplier(lambda force=False: {g.name: g}, writer, None, config.topic_prefix)

    def apply_batch(batch: Sequence[RawMessage]) -> None:
        todo = _missing(batch, committed, present, counts)
        if todo:
            applier.add(todo)
        for t, p in writer.due():
            _flush_counted(applier, t, p, result)

    result = OfflineReplayResult(topic)
    read = replay_topic(bootstrap, topic, apply_batch, from_ms=from_ms, to_ms=to_ms, progress=progress)
    for t, p in sorted(applier._held):
        _flush_counted(applier, t, p, result)
    result.records, result.seconds = read.records, read.seconds
    result.already_present, result.left_to_sink = counts["present"], counts["left"]
    result.poison = applier.poison_count
    if result.left_to_sink:
        log.info("%s: %d records at/after the offline sink's committed offsets were left to the sink",
                 g.name, result.left_to_sink)
    return result


def _missing(batch: Sequence[RawMessage], committed: Mapping[TP, int], present: Mapping[int, np.ndarray],
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

