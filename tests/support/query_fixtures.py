"""Shared helpers for the offline query tests: a hand-built offline table on local disk.

Rows are written as the offline writer lays them out (Hive partitions by event-time hour),
one or more Parquet files per partition, so the queries read real files, not in-memory data.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from schemas.names import partition_path
from sinks.offline.query_source import OfflineSource

TS = pa.timestamp("ns", "UTC")
META = [("api_invocation_time", TS), ("write_time", TS), ("is_deleted", pa.bool_()),
        ("_kafka_topic", pa.string()), ("_kafka_partition", pa.int32()), ("_kafka_offset", pa.int64())]


def table_schema(id_name: str, et_name: str, features: dict[str, pa.DataType],
                 id_type: pa.DataType | None = None) -> pa.Schema:
    """The documented offline table layout: features (event time as timestamp[ns, UTC]) + metadata."""
    id_type = pa.string() if id_type is None else id_type
    fields = [(id_name, id_type), (et_name, TS), *features.items(), *META]
    return pa.schema(fields)


def row(id_: Any, et_ns: int, offset: int, *, deleted: bool = False, ait_ns: int | None = None,
        wt_ns: int | None = None, **features: Any) -> dict[str, Any]:
    """One offline row; deletes carry only id and event time, as the writer makes them."""
    return {"__id": id_, "__et": et_ns, "api_invocation_time": ait_ns if ait_ns is not None else et_ns,
            "write_time": wt_ns if wt_ns is not None else et_ns, "is_deleted": deleted,
            "_kafka_topic": "t", "_kafka_partition": 0, "_kafka_offset": offset,
            **({} if deleted else features)}


def write_table(root: Path, schema: pa.Schema, rows: list[dict[str, Any]], *, files_per_partition: int = 1,
                drop_columns: tuple[str, ...] = ()) -> tuple[str, ...]:
    """Write ``rows`` under ``root/data/year=../month=../day=../hour=../`` and return the files."""
    id_name, et_name = schema.names[0], schema.names[1]
    by_part: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_part.setdefault(partition_path(r["__et"]), []).append(r)
    files = []
    for part, part_rows in sorted(by_part.items()):
        d = root / "data" / part
        d.mkdir(parents=True, exist_ok=True)
        for k in range(files_per_partition):
            chunk = part_rows[k::files_per_partition]
            if not chunk:
                continue
            cols = {}
            for f in schema:
                if f.name in drop_columns:
                    continue
                key = {id_name: "__id", et_name: "__et"}.get(f.name, f.name)
                cols[f.name] = pa.array([r.get(key) for r in chunk], f.type)
            path = d / f"t+00000+{chunk[0]['_kafka_offset']:020d}-{k}.parquet"
            pq.write_table(pa.table(cols), path)
            files.append(str(path))
    return tuple(files)


def make_source(tmp: Path, name: str, schema: pa.Schema, rows: list[dict[str, Any]], **kw: Any) -> OfflineSource:
    files = write_table(tmp / name, schema, rows, **kw)
    return OfflineSource(name=name, record_identifier_name=schema.names[0], event_time_name=schema.names[1],
                         schema=schema, files=files)
