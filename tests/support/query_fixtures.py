"""Shared helpers for the offline query tests: a hand-built offline Iceberg table on local disk.

Rows are committed to a real Iceberg table (SQLite catalog, day partitions, the writer's table
shape), one or more commits (so files) per partition, so the queries read real files through
pyiceberg scans, not in-memory data.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
from pyiceberg.exceptions import NoSuchTableError
from pyiceberg.table import Table

from sinks.offline.catalog import TABLE_PROPERTIES, OfflineTables
from sinks.offline.query_source import OfflineSource
from sinks.offline.table_format import partition_spec, to_table_rows
from sinks.offline.table_format import table_schema as iceberg_schema

TS = pa.timestamp("ns", "UTC")
META = [("api_invocation_time", TS), ("write_time", TS), ("is_deleted", pa.bool_()),
        ("_kafka_topic", pa.string()), ("_kafka_partition", pa.int32()), ("_kafka_offset", pa.int64())]
NAMESPACE = "t"


def table_schema_of(id_name: str, et_name: str, features: dict[str, pa.DataType],
                    id_type: pa.DataType | None = None) -> pa.Schema:
    """The documented offline view layout: features (event time as timestamp[ns, UTC]) + metadata."""
    id_type = pa.string() if id_type is None else id_type
    fields = [(id_name, id_type), (et_name, TS), *features.items(), *META]
    return pa.schema(fields)


table_schema = table_schema_of  # the name the tests import


def row(id_: Any, et_ns: int, offset: int, *, deleted: bool = False, ait_ns: int | None = None,
        wt_ns: int | None = None, **features: Any) -> dict[str, Any]:
    """One offline row; deletes carry only id and event time, as the writer makes them."""
    return {"__id": id_, "__et": et_ns, "api_invocation_time": ait_ns if ait_ns is not None else et_ns,
            "write_time": wt_ns if wt_ns is not None else et_ns, "is_deleted": deleted,
            "_kafka_topic": "t", "_kafka_partition": 0, "_kafka_offset": offset,
            **({} if deleted else features)}


def open_tables(tmp: Path, namespace: str = NAMESPACE) -> OfflineTables:
    """The offline tables of a SQLite catalog in ``tmp`` (created on first use)."""
    tmp.mkdir(parents=True, exist_ok=True)
    return OfflineTables.open(f"sqlite:///{tmp.resolve() / 'catalog.db'}", namespace)


def write_table(tables: OfflineTables, name: str, schema: pa.Schema, rows: list[dict[str, Any]], *,
                location: Path, files_per_partition: int = 1) -> Table:
    """Commit ``rows`` to the table ``name`` (created at ``location`` if missing; columns of
    ``schema`` it lacks are added, as a group update does): ``files_per_partition`` commits."""
    id_name, et_name = schema.names[0], schema.names[1]
    ident = (tables.namespace, name)
    tables.catalog.create_namespace_if_not_exists(tables.namespace)
    ice = iceberg_schema(schema, et_name)
    try:
        table = tables.catalog.load_table(ident)
        with table.update_schema() as update:
            update.union_by_name(ice)
    except NoSuchTableError:
        table = tables.catalog.create_table(ident, ice, location=str(location),
                                            partition_spec=partition_spec(ice, et_name),
                                            properties=TABLE_PROPERTIES)
    for k in range(files_per_partition):
        chunk = rows[k::files_per_partition]
        if not chunk:
            continue
        cols = {}
        for f in schema:
            key = {id_name: "__id", et_name: "__et"}.get(f.name, f.name)
            cols[f.name] = pa.array([r.get(key) for r in chunk], f.type)
        table.append(to_table_rows(pa.table(cols, schema=schema), et_name))
    return table


def make_source(tmp: Path, name: str, schema: pa.Schema, rows: list[dict[str, Any]], **kw: Any) -> OfflineSource:
    tables = open_tables(tmp)
    table = write_table(tables, name, schema, rows, location=tmp / name, **kw)
    snap = table.current_snapshot()
    return OfflineSource(name=name, record_identifier_name=schema.names[0], event_time_name=schema.names[1],
                         schema=schema, table=table, snapshot_id=None if snap is None else snap.snapshot_id)
