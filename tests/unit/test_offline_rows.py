"""Messages to offline rows: types, deletes, coordinates, and every kind of bad input."""

from __future__ import annotations

import math

import pyarrow as pa
import pytest

from schemas.messages import PutMessage
from sinks.offline.errors import OfflineRowError
from sinks.offline.rows import rows_to_table
from tests.support.offline import T0, delete, make_group, put

G = make_group()
TS = pa.timestamp("ns", "UTC")
WT = T0 + 999


def _items(*msgs, topic="fs.customers", partition=2, start=10):
    return [(m, topic, partition, start + i) for i, m in enumerate(msgs)]


def test_puts_and_deletes_become_typed_rows() -> None:
    t = rows_to_table(G, _items(put(1), delete(2)), WT)
    assert t.num_rows == 2
    assert t.schema.field("event_time").type == TS
    assert t.schema.field("write_time").type == TS
    rows = t.to_pylist()
    p, d = rows
    assert p["customer_id"] == "c-1" and p["age"] == 1 and p["score"] == 0.01
    assert p["tags"] == ["a", "t1"] and p["codes"] == [1, 101] and p["embedding"] == [0.1, 0.2, 1.0]
    assert p["is_deleted"] is False and d["is_deleted"] is True
    assert t["event_time"].cast(pa.int64()).to_pylist() == [T0 + 1_000_000, T0 + 2_000_000]
    assert t["api_invocation_time"].cast(pa.int64()).to_pylist() == [T0 + 1_000_005, T0 + 2_000_005]
    assert t["write_time"].cast(pa.int64()).to_pylist() == [WT, WT]
    assert d["customer_id"] == "c-2"
    assert all(d[f] is None for f in ("age", "score", "city", "tags", "codes", "embedding"))
    assert [r["_kafka_offset"] for r in rows] == [10, 11]
    assert {r["_kafka_topic"] for r in rows} == {"fs.customers"}
    assert {r["_kafka_partition"] for r in rows} == {2}


def test_integral_identifier_of_a_delete_is_parsed() -> None:
    g = make_group(id_type="Integral")
    t = rows_to_table(g, _items(put(5, customer_id=5), _int_delete("5")), WT)
    assert t["customer_id"].to_pylist() == [5, 5]


def _int_delete(id_: str):
    from schemas.messages import DeleteMessage
    return DeleteMessage(id=id_, event_time_ns=T0, event_time="x")


def test_missing_features_are_null_and_empty_batch_is_empty() -> None:
    m = PutMessage(id="c-1", event_time_ns=T0, record={"customer_id": "c-1", "age": 3})
    t = rows_to_table(G, _items(m), WT)
    assert t.to_pylist()[0]["score"] is None and t.to_pylist()[0]["age"] == 3
    assert rows_to_table(G, [], WT).num_rows == 0


@pytest.mark.parametrize(("override", "feature"), [
    ({"age": "forty"}, "age"),
    ({"age": 2**63}, "age"),               # huge: does not fit signed 64 bits
    ({"score": "high"}, "score"),
    ({"score": math.nan}, "score"),
    ({"balance": math.inf}, "balance"),
    ({"embedding": [0.1, math.nan, 0.3]}, "embedding"),
    ({"embedding": [0.1, 0.2]}, "embedding"),   # wrong vector dimension
    ({"tags": "not-a-list"}, "tags"),
    ({"codes": [1, "x"]}, "codes"),
    ({"city": {"nested": 1}}, "city"),
    ({"customer_id": None}, "customer_id"),
])
def test_bad_values_name_group_feature_value_and_offset(override: dict, feature: str) -> None:
    items = _items(put(1), put(2, **override), put(3))
    with pytest.raises(OfflineRowError) as ei:
        rows_to_table(G, items, WT)
    e = ei.value
    assert e.group == "customers" and e.feature == feature and e.offset == 11
    assert "customers" in str(e) and repr(feature) in str(e) and "@11" in str(e)


def test_unknown_feature_says_which_and_lists_the_valid_ones() -> None:
    with pytest.raises(OfflineRowError, match=r"\['nickname'\] the group does not define.*'age'"):
        rows_to_table(G, _items(put(1, nickname="bob")), WT)


@pytest.mark.parametrize("ns", [1.5e18, "2023-11-14T22:13:20Z", None, True, 2**64])
def test_bad_event_times(ns: object) -> None:
    m = PutMessage(id="c-1", event_time_ns=ns, record={"customer_id": "c-1"})  # type: ignore[arg-type]
    with pytest.raises(OfflineRowError, match="event_time_ns must be an integer"):
        rows_to_table(G, _items(m), WT)


def test_non_integral_delete_id_for_integral_identifier() -> None:
    with pytest.raises(OfflineRowError, match="not an integer.*Integral"):
        rows_to_table(make_group(id_type="Integral"), _items(_int_delete("abc")), WT)


@pytest.mark.parametrize(("item", "match"), [
    (("not a message", "t", 0, 1), "expected a PutMessage"),
    ((put(1), "", 0, 1), "topic must be"),
    ((put(1), "t", -1, 1), "partition must be"),
    ((put(1), "t", "0", 1), "partition must be"),
    ((put(1), "t", 0, -3), "offset must be"),
    ((put(1), "t", 0, 2**63), "offset must be"),
    ((put(1), "t", 0), "each item must be"),
    (b"\x00garbage", "each item must be"),
])
def test_garbage_items(item: object, match: str) -> None:
    with pytest.raises(OfflineRowError, match=match):
        rows_to_table(G, [item], WT)  # type: ignore[list-item]


def test_bad_write_time() -> None:
    with pytest.raises(OfflineRowError, match="write_time_ns must be an int"):
        rows_to_table(G, _items(put(1)), 1.5)  # type: ignore[arg-type]
