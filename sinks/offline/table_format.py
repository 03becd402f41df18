"""The offline table's format: what an Iceberg table of a group holds, and how rows move in and out.

Two shapes of the same rows:

- the **view** shape, ``schemas.ddl.offline_arrow_schema(group)``: what the writer builds
  (``rows.py``) and what queries see. The event time is ``timestamp[ns, UTC]``, exact.
- the **table** shape, what the Iceberg v2 table stores. Iceberg v2 timestamps are microseconds
  (nanosecond types are v3, which pyiceberg 0.12 does not write, and Spark cannot read Parquet
  nanosecond timestamps at all), so the event time column holds the instant to the microsecond,
  floored, for engines and partition pruning, and ``_event_time_ns`` (a long) holds the exact
  value given. ``api_invocation_time`` and ``write_time`` are microsecond timestamps; they are
  our own clocks' readings, not user values.

``_event_time_ns`` starts with '_' like the Kafka coordinates, so no feature can be named like
it (feature names start with a letter or digit).

Partitioning: ``day(event_time)``. A day, not an hour: a backfill spread over 28 days then
writes at most 28 files per flush instead of 672 (the issue measured 4,032 files of ~30 rows
for hour partitions), and steady streams make day files big enough to need few rewrites.
Time travel and point-in-time joins still skip whole days, and Parquet row-group statistics on
the event time narrow further inside a day.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.transforms import DayTransform
from pyiceberg.types import (
    BooleanType,
    DoubleType,
    IcebergType,
    IntegerType,
    ListType,
    LongType,
    NestedField,
    StringType,
    TimestamptzType,
)

from schemas.names import partition_field_name
from sinks.offline.errors import OfflineLayoutError

EVENT_TIME_NS = "_event_time_ns"
TIMESTAMP_COLUMNS = ("api_invocation_time", "write_time")
PARTITION_FIELD_ID = 1000
TS_NS = pa.timestamp("ns", "UTC")
TS_US = pa.timestamp("us", "UTC")


class _Ids:
    def __init__(self) -> None:
        self.next = 0

    def __call__(self) -> int:
        self.next += 1
        return self.next


def _iceberg_type(field: pa.Field, ids: _Ids, where: str) -> IcebergType:
    t = field.type
    if pa.types.is_timestamp(t):
        return TimestamptzType()
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return StringType()
    if pa.types.is_int64(t):
        return LongType()
    if pa.types.is_int32(t):
        return IntegerType()
    if pa.types.is_float64(t):
        return DoubleType()
    if pa.types.is_boolean(t):
        return BooleanType()
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        element_id = ids()
        element = _iceberg_type(pa.field("element", t.value_type), ids, where)
        return ListType(element_id, element, element_required=False)
    raise OfflineLayoutError(f"{where}: column {field.name!r} has Arrow type {t}, which the offline table "
                             "cannot store (expected string, int64, int32, double, bool, timestamp or a list)")


def table_schema(view: pa.Schema, event_time_name: str, *, where: str = "offline table") -> Schema:
    """The Iceberg schema of a table whose rows look like ``view`` (the view shape).

    Field ids follow the view's column order, then ``_event_time_ns``; list elements take the
    next ids. A group update that adds features adds columns at the end of the view, so
    ``update_schema().union_by_name`` matches the existing columns by name.
    """
    if event_time_name not in view.names:
        raise OfflineLayoutError(f"{where}: the event-time column {event_time_name!r} is not among the "
                                 f"columns {view.names}")
    ids = _Ids()
    fields = []
    for f in view:
        fid = ids()
        fields.append(NestedField(fid, f.name, _iceberg_type(f, ids, where), required=False))
    fields.append(NestedField(ids(), EVENT_TIME_NS, LongType(), required=False))
    return Schema(*fields)


def partition_spec(schema: Schema, event_time_name: str) -> PartitionSpec:
    """``day(event_time)``: see the module docstring for why a day."""
    source = schema.find_field(event_time_name)
    return PartitionSpec(PartitionField(source_id=source.field_id, field_id=PARTITION_FIELD_ID,
                                        transform=DayTransform(), name=partition_field_name(event_time_name)))


def _floor_us(ns: pa.ChunkedArray | pa.Array) -> pa.Array:
    # Floor (not truncate toward zero) so a time before 1970 lands in its own day partition.
    values = ns.cast(pa.int64()).to_numpy(zero_copy_only=False)
    return pa.array(np.floor_divide(values, 1000), pa.int64()).cast(TS_US)


def to_table_rows(view_rows: pa.Table, event_time_name: str) -> pa.Table:
    """View-shaped rows (nanosecond timestamps) → the table shape (microseconds + exact ns column)."""
    out = view_rows
    ns = view_rows.column(event_time_name).combine_chunks()
    idx = out.schema.get_field_index(event_time_name)
    out = out.set_column(idx, pa.field(event_time_name, TS_US), _floor_us(ns))
    for name in TIMESTAMP_COLUMNS:
        i = out.schema.get_field_index(name)
        out = out.set_column(i, pa.field(name, TS_US), _floor_us(out.column(name).combine_chunks()))
    return out.append_column(pa.field(EVENT_TIME_NS, pa.int64()), ns.cast(pa.int64()))


def to_view_rows(table_rows: pa.Table, view: pa.Schema, event_time_name: str) -> pa.Table:
    """Table-shaped rows (as a scan returns them) → exactly the ``view`` schema.

    The event time comes back from ``_event_time_ns``, to the nanosecond; columns a file
    predates are nulls of the right type.
    """
    n = table_rows.num_rows
    cols: list[Any] = []
    for f in view:
        if f.name == event_time_name and EVENT_TIME_NS in table_rows.column_names:
            cols.append(table_rows.column(EVENT_TIME_NS).cast(pa.int64()).cast(f.type))
        elif f.name in table_rows.column_names:
            col = table_rows.column(f.name)
            cols.append(col if col.type == f.type else col.cast(f.type))
        else:
            cols.append(pa.nulls(n, f.type))
    return pa.Table.from_arrays(cols, schema=view)
