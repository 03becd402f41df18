"""Builds an offline table in the layout before Iceberg, as the old sink wrote it (no tests here).

The old format (``sinks/offline/legacy_layout.py`` describes it; git history before the Iceberg
change has the writer): rows in the view shape (``offline_arrow_schema``, timestamps Parquet
INT64 nanoseconds), one file per batch per event-time hour per Kafka partition, named
``<topic>+<partition:05d>+<first offset:020d>.parquet`` under ``data/year=/month=/day=/hour=/``;
a compaction wrote ``compacted-<id>.parquet`` and then ``_manifests/<id>.json`` naming its inputs,
which stayed on disk until deleted. This builder leaves such inputs in place (they must not be
read twice) and also a compaction output whose manifest was never written (a crash: not live).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from schemas.group import FeatureGroup
from schemas.messages import DeleteMessage, PutMessage
from sinks.offline.fs import open_filesystem
from sinks.offline.rows import rows_to_table

Item = tuple[PutMessage | DeleteMessage, str, int, int]
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def partition_path(event_time_ns: int) -> str:
    """The old layout's Hive partition of a row by its event time, UTC: ``year=YYYY/month=MM/day=DD/hour=HH``."""
    # timedelta arithmetic is exact for any int (float seconds would round far from 1970).
    t = _EPOCH + timedelta(seconds=event_time_ns // 1_000_000_000)
    return f"year={t.year:04d}/month={t.month:02d}/day={t.day:02d}/hour={t.hour:02d}"


def data_file_name(topic: str, partition: int, first_offset: int) -> str:
    """The old sink's file name from Kafka coordinates (zero padded: lexical order = offset order)."""
    return f"{topic}+{int(partition):05d}+{int(first_offset):020d}.parquet"


def _write(fs: Any, path: str, rows: pa.Table) -> None:
    assert rows.schema.field("api_invocation_time").type == pa.timestamp("ns", "UTC")
    with fs.open(path, "wb") as fh:
        pq.write_table(rows, fh)  # timestamp[ns] → Parquet INT64 TIMESTAMP(NANOS), as the old sink wrote


def write_legacy_table(group: FeatureGroup, items: Sequence[Item], storage_options: dict[str, Any] | None,
                       *, batch: int = 50) -> dict[str, int]:
    """Write ``items`` at ``group.offline_uri`` in the old layout; returns counts of what was written."""
    fs, root = open_filesystem(group.offline_uri, storage_options)
    root = root.rstrip("/")
    files: list[tuple[str, pa.Table]] = []
    by_partition: dict[tuple[str, int], list[Item]] = {}
    for item in items:
        by_partition.setdefault((item[1], item[2]), []).append(item)
    for (topic, _), part in sorted(by_partition.items()):
        for start in range(0, len(part), batch):
            chunk = part[start:start + batch]
            by_hour: dict[str, list[Item]] = {}
            for item in chunk:
                by_hour.setdefault(partition_path(item[0].event_time_ns), []).append(item)
            for hour, hour_items in sorted(by_hour.items()):
                rows = rows_to_table(group, hour_items, time.time_ns())
                name = data_file_name(topic, hour_items[0][2], hour_items[0][3])
                files.append((f"{root}/data/{hour}/{name}", rows))
    for path, rows in files:
        _write(fs, path, rows)
    # A committed compaction of the first hour's files: output + manifest, inputs left on disk.
    first_hour = files[0][0].rsplit("/", 1)[0]
    inputs = [(p, r) for p, r in files if p.rsplit("/", 1)[0] == first_hour]
    cid = uuid.uuid4().hex
    _write(fs, f"{first_hour}/compacted-{cid}.parquet", pa.concat_tables([r for _, r in inputs]))
    rel = first_hour[len(root) + 1:]
    manifest = {"format": 1, "id": cid, "output": f"{rel}/compacted-{cid}.parquet",
                "inputs": [p[len(root) + 1:] for p, _ in inputs], "rows": sum(r.num_rows for _, r in inputs),
                "committed_at_ns": time.time_ns()}
    with fs.open(f"{root}/_manifests/{cid}.json", "wb") as fh:
        fh.write(json.dumps(manifest).encode())
    # A compaction that crashed before its manifest: its output must not be read.
    last_path, last_rows = files[-1]
    _write(fs, f"{last_path.rsplit('/', 1)[0]}/compacted-{uuid.uuid4().hex}.parquet", last_rows)
    # An in-progress temp file, never data.
    _write(fs, f"{last_path.rsplit('/', 1)[0]}/.tmp-{uuid.uuid4().hex}.parquet", last_rows)
    return {"files": len(files), "compacted_inputs": len(inputs),
            "rows": int(sum(pc.count(r["_kafka_offset"]).as_py() for _, r in files))}
