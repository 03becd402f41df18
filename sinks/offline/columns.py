"""Decoded batch columns to offline rows: ``schemas.batch.BatchColumns`` -> the view shape, no row objects.

The batch path's counterpart of ``rows.py`` (which stays for the rows that go the per-record
way). Pure. Every row given here was proven valid by ``schemas.batch``, so nothing is checked
again: the record struct's children already have the view's types (``offline_arrow_schema``),
deletes have a null record (so null features), and only the identifier of an Integral delete is
cast from its (canonical, proven) id text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from schemas.batch import BatchColumns
from schemas.ddl import offline_arrow_schema
from schemas.group import FeatureGroup
from schemas.types import ScalarType
from sinks.offline.rows import (
    API_INVOCATION_TIME,
    IS_DELETED,
    KAFKA_OFFSET,
    KAFKA_PARTITION,
    KAFKA_TOPIC,
    WRITE_TIME,
    estimate_record_bytes,
)


@dataclass(frozen=True)
class ColumnRows:
    """View-shaped rows of one (topic, partition), in offset order, ``write_time`` still null (it is
    when the flush writes them). ``source``/``source_rows`` say where each row came from, for
    the writer's size estimate (sampled, as for messages)."""

    rows: pa.Table
    offsets: np.ndarray
    source: BatchColumns
    source_rows: np.ndarray

    def __len__(self) -> int:
        return len(self.offsets)

    def slice(self, start: int, stop: int) -> ColumnRows:
        return ColumnRows(self.rows.slice(start, stop - start), self.offsets[start:stop], self.source,
                          self.source_rows[start:stop])

    def estimate_bytes(self, j: int) -> int:
        """``rows.estimate_row_bytes`` of row ``j``, from the values as the message gave them."""
        i = int(self.source_rows[j])
        if self.source.is_delete[i]:
            return 64 + len(self.source.id[i].as_py())
        record: dict[str, Any] = self.source.record[i].as_py()
        return estimate_record_bytes(record)


def view_rows(columns: BatchColumns, rows: np.ndarray, topic: str, partitions: np.ndarray, offsets: np.ndarray,
              api_invocation_time_ns: np.ndarray) -> pa.Table:
    """Rows ``rows`` of ``columns`` in ``offline_arrow_schema(columns.group)``, in the given order.

    ``partitions``/``offsets``/``api_invocation_time_ns`` are per selected row."""
    group: FeatureGroup = columns.group
    schema = offline_arrow_schema(group)
    k = len(rows)
    idx = pa.array(rows, pa.int64())
    record = columns.record.take(idx)
    children = dict(zip([record.type.field(i).name for i in range(record.type.num_fields)], record.flatten(),
                        strict=True))
    is_delete = columns.is_delete[rows]
    rid = group.record_identifier_name
    out: list[pa.Array] = []
    for fld in schema:
        name = fld.name
        if name == group.event_time_name:
            out.append(pa.array(columns.event_time_ns[rows], pa.int64()).cast(fld.type))
        elif name == API_INVOCATION_TIME:
            out.append(pa.array(api_invocation_time_ns, pa.int64()).cast(fld.type))
        elif name == WRITE_TIME:
            out.append(pa.nulls(k, fld.type))
        elif name == IS_DELETED:
            out.append(pa.array(is_delete, pa.bool_()))
        elif name == KAFKA_TOPIC:
            out.append(pa.repeat(pa.scalar(topic, fld.type), k))
        elif name == KAFKA_PARTITION:
            out.append(pa.array(partitions.astype(np.int32), fld.type))
        elif name == KAFKA_OFFSET:
            out.append(pa.array(offsets, fld.type))
        elif name == rid and is_delete.any():
            out.append(_identifier(columns, idx, is_delete, children[name], group))
        else:
            out.append(children[name])
    return pa.Table.from_arrays(out, schema=schema)


def _identifier(columns: BatchColumns, idx: pa.Array, is_delete: np.ndarray, from_record: pa.Array,
                group: FeatureGroup) -> pa.Array:
    """A put's identifier is its record's; a delete's is its id (an Integral one's canonical text)."""
    ids = columns.id.take(idx)
    mask = pa.array(is_delete)
    if group.record_identifier.type is ScalarType.INTEGRAL:
        ids = pc.cast(pc.if_else(mask, ids, pa.scalar("0")), pa.int64())
    return pc.if_else(mask, ids, from_record)


def conformed(rows: pa.Table, schema: pa.Schema, write_time_ns: int) -> pa.Table:
    """``rows`` in ``schema`` (a newer group version's: features it predates are null), with the
    flush's write time."""
    n = rows.num_rows
    cols = []
    for f in schema:
        if f.name == WRITE_TIME:
            cols.append(pa.repeat(pa.scalar(write_time_ns, type=f.type), n))
        elif f.name in rows.column_names:
            cols.append(rows.column(f.name))
        else:
            cols.append(pa.nulls(n, f.type))
    return pa.Table.from_arrays(cols, schema=schema)
