"""Support for the read-path comparisons: an offline table with a history, built for real.

``build_history`` commits, to a real Iceberg table, random rows in several snapshots (record
deletes, equal event times and out-of-order writes among them), then adds two features (a group
update: the table's schema gains columns, older files lack them), writes rows that use them,
compacts (an ``overwrite`` snapshot replacing small files), and writes again. It returns the
snapshot ids at each stage, so a source can be pinned to any of them.

``add_position_deletes`` writes what featurestream never writes but another engine may: an Iceberg
positional delete file removing rows of one data file.
"""

from __future__ import annotations

import random
import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from pyiceberg.manifest import DataFile, DataFileContent, FileFormat
from pyiceberg.table import Table

from sinks.offline.catalog import OfflineTables
from sinks.offline.maintenance import compact_table
from tests.support.query_fixtures import row, table_schema, write_table

T0 = 1_633_176_000 * 1_000_000_000
STEP = 1_000  # 1 us between candidate event times
DAY = 86_400 * 1_000_000_000

SCHEMA_V1 = table_schema("customer_id", "event_time", {"age": pa.int64(), "score": pa.float64()})
SCHEMA_V2 = table_schema("customer_id", "event_time", {"age": pa.int64(), "score": pa.float64(),
                                                       "tags": pa.list_(pa.string()),
                                                       "emb": pa.list_(pa.float64())})
IDS = [f"c{i}" for i in range(6)]
STAGES = ("before_update", "after_update", "compacted", "latest")


def _rows(rng: random.Random, offsets: range, *, v2: bool) -> list[dict[str, Any]]:
    rows = []
    for offset in offsets:
        id_ = rng.choice(IDS)
        # some times inside a microsecond: the nanoseconds must survive the read
        et = T0 + rng.randrange(0, 12) * STEP + rng.choice([0, DAY, 2 * DAY]) + rng.choice([0, 0, 7])
        if rng.random() < 0.15:
            rows.append(row(id_, et, offset, deleted=True))
            continue
        values: dict[str, Any] = {"age": rng.randrange(100), "score": rng.choice([rng.random(), -0.0, None])}
        if v2:
            values["tags"] = rng.choice([["x"], ["x", "y"], [], None])
            values["emb"] = rng.choice([[-0.0, 1.5], [0.0], None])
        rows.append(row(id_, et, offset, **values))
    return rows


def _snapshot_id(table: Table) -> int:
    snap = table.current_snapshot()
    assert snap is not None
    return snap.snapshot_id


def build_history(tables: OfflineTables, name: str, location: str | Path, seed: int
                  ) -> tuple[Table, dict[str, int], list[dict[str, Any]]]:
    """The table, the snapshot id after each of ``STAGES``, and every row written."""
    rng = random.Random(seed)
    rows1 = _rows(rng, range(0, 60), v2=False)
    write_table(tables, name, SCHEMA_V1, rows1, location=location, files_per_partition=3)
    snaps = {"before_update": _snapshot_id(tables.catalog.load_table((tables.namespace, name)))}
    rows2 = _rows(rng, range(60, 100), v2=True)
    write_table(tables, name, SCHEMA_V2, rows2, location=location, files_per_partition=2)
    snaps["after_update"] = _snapshot_id(tables.catalog.load_table((tables.namespace, name)))
    done = compact_table(lambda: tables.catalog.load_table((tables.namespace, name)), target_bytes=64 << 20)
    assert done, "nothing was compacted; the history needs a rewrite snapshot"
    snaps["compacted"] = _snapshot_id(tables.catalog.load_table((tables.namespace, name)))
    rows3 = _rows(rng, range(100, 120), v2=True)
    table = write_table(tables, name, SCHEMA_V2, rows3, location=location)
    snaps["latest"] = _snapshot_id(table)
    return table, snaps, rows1 + rows2 + rows3


def add_position_deletes(table: Table, data_file: DataFile, positions: list[int]) -> Table:
    """Commit a positional delete file removing rows ``positions`` of ``data_file``."""
    schema = pa.schema([pa.field("file_path", pa.string(), nullable=False,
                                 metadata={"PARQUET:field_id": "2147483546"}),
                        pa.field("pos", pa.int64(), nullable=False, metadata={"PARQUET:field_id": "2147483545"})])
    rows = pa.table({"file_path": [data_file.file_path] * len(positions), "pos": positions}, schema=schema)
    path = f"{table.location().rstrip('/')}/data/deletes-{uuid.uuid4().hex}.parquet"
    with table.io.new_output(path).create() as out:
        pq.write_table(rows, out)
    size = len(table.io.new_input(path))
    delete_file = DataFile.from_args(content=DataFileContent.POSITION_DELETES, file_path=path,
                                     file_format=FileFormat.PARQUET, partition=data_file.partition,
                                     record_count=len(positions), file_size_in_bytes=size)
    delete_file.spec_id = data_file.spec_id
    with table.transaction() as tx, tx.update_snapshot().fast_append() as append:
        append.append_data_file(delete_file)
    return table.refresh()
