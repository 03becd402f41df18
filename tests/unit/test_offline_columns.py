"""sinks/offline/columns.py and PartitionWriter.add_rows: proven batch columns to offline rows."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from schemas.batch import decode_batch
from schemas.ddl import offline_arrow_schema
from schemas.types import FeatureDefinition
from schemas.validate import compile_validator, validate_delete
from schemas.wire import encode
from sinks.offline.columns import ColumnRows, conformed, view_rows
from sinks.offline.errors import OfflineLayoutError
from sinks.offline.partition_writer import PartitionWriter
from sinks.offline.rotation import RotationPolicy
from tests.support.offline import make_group

G = make_group(id_type="Integral")
TOPIC = "fs.customers"


def _columns():
    v = compile_validator(G)
    msgs = [encode(v.validate({"customer_id": 7, "event_time": "2023-11-14T22:13:20.5Z", "age": 3,
                               "embedding": [0.1, 0.2, 0.3]}, api_invocation_time_ns=11)),
            encode(validate_delete(G, -42, "2023-11-14T22:13:21Z", api_invocation_time_ns=12))]
    cols = decode_batch(G, [m[0] for m in msgs], [m[1] for m in msgs], [m[2] for m in msgs])
    assert cols.fast.all()
    return cols


def test_puts_and_deletes_of_an_integral_identifier_become_rows() -> None:
    cols = _columns()
    t = view_rows(cols, np.array([0, 1]), TOPIC, np.array([2, 2]), np.array([5, 6]), np.array([11, 99]))
    assert t.schema == offline_arrow_schema(G)
    rows = t.to_pylist()
    assert [r["customer_id"] for r in rows] == [7, -42]
    assert [r["is_deleted"] for r in rows] == [False, True]
    assert rows[0]["embedding"] == [0.1, 0.2, 0.3] and rows[1]["embedding"] is None and rows[1]["age"] is None
    assert t["event_time"].cast(pa.int64()).to_pylist() == [1_700_000_000_500_000_000, 1_700_000_001_000_000_000]
    assert t["api_invocation_time"].cast(pa.int64()).to_pylist() == [11, 99]
    assert t["_kafka_offset"].to_pylist() == [5, 6] and t["_kafka_partition"].to_pylist() == [2, 2]
    assert t["write_time"].null_count == 2  # set by the flush


def test_rows_of_an_older_version_get_the_new_features_as_nulls_and_the_write_time() -> None:
    cols = _columns()
    t = view_rows(cols, np.array([0]), TOPIC, np.array([0]), np.array([1]), np.array([1]))
    newer = G.with_added_features([FeatureDefinition("added", "String")])
    out = conformed(t, offline_arrow_schema(newer), 123)
    assert out.column("added").to_pylist() == [None]
    assert out.column("write_time").cast(pa.int64()).to_pylist() == [123]


def test_a_chunk_must_go_on_from_the_last_offset_in_increasing_order() -> None:
    cols = _columns()
    t = view_rows(cols, np.array([0, 1]), TOPIC, np.array([0, 0]), np.array([5, 6]), np.array([1, 1]))
    w = PartitionWriter(lambda g: None, G, TOPIC, 0, 5, RotationPolicy())  # type: ignore[arg-type, return-value]
    with pytest.raises(OfflineLayoutError, match="must increase"):
        w.add_rows(G, ColumnRows(t, np.array([6, 5]), cols, np.array([0, 1])))
    w.add_rows(G, ColumnRows(t, np.array([5, 6]), cols, np.array([0, 1])))
    with pytest.raises(OfflineLayoutError, match="not where this writer's batch goes on"):
        w.add_rows(G, ColumnRows(t, np.array([6, 7]), cols, np.array([0, 1])))
    assert w.buffered_rows == 2
    prepared = w.prepare()
    assert prepared is not None and prepared.rows is not None and prepared.advance.next == 7
