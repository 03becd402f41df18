"""``featurestream offline migrate GROUP``: a pre-Iceberg table (``legacy_layout.py``) into Iceberg.

The issue asked to register the old Parquet files without rewriting them. That cannot be done:
their timestamps are Parquet INT64 nanoseconds, which an Iceberg v2 table cannot hold (nanosecond
timestamps are v3, which pyiceberg 0.12 does not write; its ``add_files`` refuses them with
``UnsupportedPyArrowTypeException``, checked), and they lack the ``_event_time_ns`` column that keeps
the exact event time. So the migration **rewrites** the rows: it reads every live old file,
converts the event time to microseconds plus the exact ``_event_time_ns`` (``table_format``),
drops rows seen twice (same Kafka topic, partition and offset), and appends everything in **one**
Iceberg commit that also records, per Kafka partition, the offset after the last one migrated,
so the sink resumes right after. One commit makes it atomic: killed before it, the table is
unchanged and a re-run starts over (its uploads are orphans, removed by maintenance); after it,
the commit's marker property makes a re-run a no-op. The old files are left in place.

It holds the whole table in memory while converting (one Arrow table): fine for the old layout's
sizes here; a very large table would need batching with per-batch markers.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from schemas.ddl import offline_arrow_schema
from schemas.group import FeatureGroup
from sinks.offline.catalog import OfflineTables
from sinks.offline.errors import OfflineLayoutError
from sinks.offline.fs import storage_errors
from sinks.offline.legacy_layout import find_legacy_table
from sinks.offline.table_commit import Advance, commit_append, recorded_offsets
from sinks.offline.table_files import write_data_files
from sinks.offline.table_format import to_table_rows

MIGRATED_PROPERTY = "featurestream.migrated-from-legacy-layout"


@dataclass(frozen=True)
class MigrationResult:
    already_done: bool
    files: int
    rows: int
    duplicates: int
    offsets: dict[tuple[str, int], int]
    snapshot_id: int | None


def _marker(table: Any) -> tuple[int, dict] | None:
    """(snapshot id, marker) of the migration commit among the table's snapshots, if any."""
    for snap in table.metadata.snapshots:
        raw = snap.summary.additional_properties.get(MIGRATED_PROPERTY) if snap.summary else None
        if raw:
            return snap.snapshot_id, json.loads(raw)
    return None


def _view_rows(table: pa.Table, view: pa.Schema, path: str) -> pa.Table:
    """An old file's rows in the group's view shape (columns by name; ones it predates are nulls)."""
    cols = []
    for f in view:
        if f.name in table.column_names:
            col = table.column(f.name)
            try:
                cols.append(col if col.type == f.type else col.cast(f.type))
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise OfflineLayoutError(f"{path}: column {f.name!r} is {col.type}, expected {f.type}: {exc}") from None
        else:
            cols.append(pa.nulls(table.num_rows, f.type))
    return pa.Table.from_arrays(cols, schema=view)


def _drop_duplicates(rows: pa.Table) -> tuple[pa.Table, int]:
    """Keep the first row of each (topic, partition, offset)."""
    idx = pa.array(range(rows.num_rows), pa.int64())
    keyed = rows.select(["_kafka_topic", "_kafka_partition", "_kafka_offset"]).append_column("_i", idx)
    first = keyed.group_by(["_kafka_topic", "_kafka_partition", "_kafka_offset"]).aggregate([("_i", "min")])
    keep = pc.sort_indices(first["_i_min"])
    taken = rows.take(pc.take(first["_i_min"], keep))
    return taken, rows.num_rows - taken.num_rows


def migrate(group: FeatureGroup, tables: OfflineTables, storage_options: dict[str, Any] | None = None, *,
            progress: Callable[[str], None] = lambda _: None,
            hook: Callable[[str], None] | None = None) -> MigrationResult:
    """Rewrite ``group``'s old-layout table into its Iceberg table (see the module docstring).

    ``progress`` receives one line per step; ``hook`` is called with "uploaded" between the
    upload and the commit (crash tests)."""
    if not group.offline_enabled or not group.offline_uri:
        raise OfflineLayoutError(f"feature group {group.name!r} has no offline store (offline_uri is None): "
                                 "nothing to migrate")
    existing = tables.existing(group)
    done = None if existing is None else _marker(existing)
    if done is not None:
        offsets = recorded_offsets(existing)
        return MigrationResult(True, int(done[1].get("files", 0)), int(done[1].get("rows", 0)), 0, offsets, done[0])
    legacy = find_legacy_table(group.offline_uri, storage_options)
    if legacy is None:
        raise OfflineLayoutError(f"feature group {group.name!r}: no pre-Iceberg layout under {group.offline_uri} "
                                 "(no data/year=YYYY/.../hour=HH/*.parquet files): nothing to migrate")
    if existing is not None and recorded_offsets(existing):
        raise OfflineLayoutError(
            f"feature group {group.name!r}: its Iceberg table already holds rows a sink or a replay wrote "
            f"(offsets {sorted(recorded_offsets(existing).items())[:4]}...); migrating now would mix the two "
            "histories. Migrate before starting the new sink (or purge the Iceberg table and run it again)")
    view = offline_arrow_schema(group)
    parts = []
    for n, path in enumerate(legacy.live, 1):
        with storage_errors("read", path):
            with legacy.fs.open(path, "rb") as fh:
                parts.append(_view_rows(pq.read_table(fh), view, path))
        progress(f"read {n}/{len(legacy.live)} files: {path}")
    rows, duplicates = _drop_duplicates(pa.concat_tables(parts))
    offsets: dict[tuple[str, int], int] = {}
    for t, p, o in zip(rows["_kafka_topic"].to_pylist(), rows["_kafka_partition"].to_pylist(),
                       rows["_kafka_offset"].to_pylist(), strict=True):
        offsets[(t, p)] = max(offsets.get((t, p), 0), o + 1)
    table = tables.table(group)
    progress(f"writing {rows.num_rows} rows into the Iceberg table {'.'.join(tables.identifier(group))}")
    files = write_data_files(table, to_table_rows(rows, group.event_time_name))
    if hook is not None:
        hook("uploaded")  # crash tests kill the process here: files uploaded, nothing committed
    marker = {MIGRATED_PROPERTY: json.dumps({"files": len(legacy.live), "rows": rows.num_rows,
                                             "duplicates": duplicates, "from": group.offline_uri})}
    committed = commit_append(lambda: tables.table(group), files,
                              [Advance(t, p, None, o) for (t, p), o in sorted(offsets.items())],
                              first=table, properties=marker)
    snap = committed.current_snapshot()
    return MigrationResult(False, len(legacy.live), rows.num_rows, duplicates, offsets,
                           None if snap is None else snap.snapshot_id)
