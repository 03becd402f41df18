"""Point-in-time join: every bad input gets a clear, typed error; edge cases get sane answers."""

from __future__ import annotations

import math

import pandas as pd
import pyarrow as pa
import pytest

from schemas.errors import GroupNotFoundError, ValidationError
from sinks.offline.query import OfflineQuery
from sinks.offline.query_errors import EntityRowsError, UnknownFeatureError, UnknownGroupError
from sinks.offline.query_source import OfflineSource
from tests.support.query_fixtures import make_source, row, table_schema

T0 = 1_633_176_000 * 1_000_000_000
SCHEMA = table_schema("customer_id", "event_time", {"age": pa.int64(), "score": pa.float64()})
INT_SCHEMA = table_schema("store_id", "event_time", {"age": pa.int64()}, id_type=pa.int64())


@pytest.fixture()
def q(tmp_path):
    src = make_source(tmp_path, "customers", SCHEMA, [row("a", T0, 0, age=1, score=0.5)])
    stores = make_source(tmp_path, "stores", INT_SCHEMA, [row(7, T0, 0, age=70)])
    empty = OfflineSource("fresh", "customer_id", "event_time", SCHEMA)
    with OfflineQuery([src, stores, empty]) as q:
        yield q


def entity(ids=("a",), times=(T0,)):
    return pd.DataFrame({"customer_id": list(ids), "event_time": pd.to_datetime(list(times), utc=True)})


def test_unknown_group(q):
    with pytest.raises(UnknownGroupError, match="'orders'.*'customers'") as info:
        q.get_historical_features(entity(), ["orders:age"])
    assert isinstance(info.value, GroupNotFoundError)


def test_unknown_feature(q):
    with pytest.raises(UnknownFeatureError, match="'customers' has no feature 'height'.*'age'"):
        q.get_historical_features(entity(), ["customers:height"])


@pytest.mark.parametrize("features", ["customers:age", None, [], ["customers"], ["customers:"], [":age"],
                                      [42], [("customers", "age")], [("customers",)]])
def test_malformed_feature_lists(q, features):
    with pytest.raises(EntityRowsError, match="feature"):
        q.get_historical_features(entity(), features)


def test_feature_mapping_form(q):
    out = q.get_historical_features(entity(), {"customers": ["score", "age"]})
    assert out.column_names == ["customer_id", "event_time", "score", "age"]
    assert out["age"].to_pylist() == [1]


def test_missing_id_column(q):
    df = entity().rename(columns={"customer_id": "cust"})
    with pytest.raises(EntityRowsError, match="no column 'customer_id'.*'customers'.*cust"):
        q.get_historical_features(df, ["customers:age"])


def test_missing_timestamp_column(q):
    with pytest.raises(EntityRowsError, match="no timestamp column 'when'.*event_time"):
        q.get_historical_features(entity(), ["customers:age"], timestamp_column="when")


@pytest.mark.parametrize("times", [["2021-10-02T12:00:00Z"], [1633176000], [1633176000.5], [True]])
def test_timestamps_that_are_not_timestamps(q, times):
    df = pd.DataFrame({"customer_id": ["a"], "event_time": times})
    with pytest.raises(EntityRowsError, match="not a timestamp.*to_datetime"):
        q.get_historical_features(df, ["customers:age"])


def test_naive_timestamps_are_rejected(q):
    df = pd.DataFrame({"customer_id": ["a"], "event_time": pd.to_datetime([T0])})
    with pytest.raises(EntityRowsError, match="without a time zone.*tz_localize"):
        q.get_historical_features(df, ["customers:age"])


@pytest.mark.parametrize("missing", [None, pd.NaT, math.nan])
def test_missing_timestamps(q, missing):
    df = pd.DataFrame({"customer_id": ["a", "a"],
                       "event_time": pd.to_datetime([pd.Timestamp(T0, tz="UTC"), missing], utc=True)})
    with pytest.raises(EntityRowsError, match=r"1 missing timestamp.*row\(s\) \[1\]"):
        q.get_historical_features(df, ["customers:age"])


def test_timestamps_out_of_nanosecond_range(q):
    t = pa.table({"customer_id": ["a"], "event_time": pa.array([10**17], pa.timestamp("s", "UTC"))})
    with pytest.raises(EntityRowsError, match="outside"):
        q.get_historical_features(t, ["customers:age"])


def test_id_column_of_the_wrong_type(q):
    df = pd.DataFrame({"customer_id": [1], "event_time": pd.to_datetime([T0], utc=True)})
    with pytest.raises(EntityRowsError, match="'customer_id'.*int64.*'customers'.*string"):
        q.get_historical_features(df, ["customers:age"])
    df = pd.DataFrame({"store_id": ["7"], "event_time": pd.to_datetime([T0], utc=True)})
    with pytest.raises(EntityRowsError, match="'store_id'.*'stores'.*int64"):
        q.get_historical_features(df, ["stores:age"])


def test_int32_ids_and_categorical_ids_are_fine(q):
    df = pd.DataFrame({"store_id": pd.array([7, 8], dtype="int32"), "event_time": pd.to_datetime([T0, T0], utc=True)})
    assert q.get_historical_features(df, ["stores:age"])["age"].to_pylist() == [70, None]
    df = entity(["a", "b"], [T0, T0]).astype({"customer_id": "category"})
    assert q.get_historical_features(df, ["customers:age"])["age"].to_pylist() == [1, None]


@pytest.mark.parametrize("bad", ["1 day", -1, float("nan"), pd.Timedelta(-1, "s"), [1]])
def test_bad_max_age(q, bad):
    with pytest.raises(EntityRowsError, match="max_age"):
        q.get_historical_features(entity(), ["customers:age"], max_age=bad)


def test_max_age_in_seconds(q):
    later = entity(times=[T0 + 2_000_000_000])
    assert q.get_historical_features(later, ["customers:age"], max_age=2)["age"].to_pylist() == [1]
    assert q.get_historical_features(later, ["customers:age"], max_age=1.5)["age"].to_pylist() == [None]


@pytest.mark.parametrize("rows", [42, "customer_id,event_time", {"customer_id": ["a"]}, [("a", T0)]])
def test_entity_rows_of_the_wrong_kind(q, rows):
    with pytest.raises(EntityRowsError, match="DataFrame or a pyarrow Table"):
        q.get_historical_features(rows, ["customers:age"])


def test_entity_rows_pandas_cannot_convert(q):
    df = pd.DataFrame({"customer_id": ["a", 1], "event_time": pd.to_datetime([T0, T0], utc=True)})
    with pytest.raises(EntityRowsError, match="cannot be converted"):
        q.get_historical_features(df, ["customers:age"])


def test_empty_entity_rows_give_empty_result_with_schema(q):
    out = q.get_historical_features(entity([], []), ["customers:*"])
    assert out.num_rows == 0
    assert out.schema.field("age").type == pa.int64() and out.schema.field("score").type == pa.float64()


def test_group_without_files_gives_nulls_with_schema(q):
    out = q.get_historical_features(entity(["a", "a"], [T0, T0]), ["fresh:*", "fresh:event_time"],
                                    full_feature_names=True)
    assert out["fresh__age"].to_pylist() == [None, None]
    assert out.schema.field("fresh__event_time").type == pa.timestamp("ns", "UTC")


def test_output_name_collisions(q):
    with pytest.raises(EntityRowsError, match="'event_time'.*collides.*full_feature_names"):
        q.get_historical_features(entity(), ["customers:event_time"])
    df = entity().assign(age=[5])
    with pytest.raises(EntityRowsError, match="'age'.*collides with entity rows"):
        q.get_historical_features(df, ["customers:age"])
    df = pd.DataFrame({"customer_id": ["a"], "store_id": [7], "event_time": pd.to_datetime([T0], utc=True)})
    with pytest.raises(EntityRowsError, match="'age' of group 'stores' collides with feature 'age' of group"):
        q.get_historical_features(df, ["customers:age", "stores:age"])
    out = q.get_historical_features(df, ["customers:age", "stores:age"], full_feature_names=True)
    assert (out["customers__age"].to_pylist(), out["stores__age"].to_pylist()) == ([1], [70])


def test_entity_columns_are_kept_unchanged_and_internal_names_do_not_clash(q):
    t = pa.table({"__row": [9, 8], "customer_id": pa.array(["a", None]), "__ts": ["x", "y"],
                  "event_time": pa.array([T0 // 1000] * 2, pa.timestamp("us", "Europe/Paris"))})
    out = q.get_historical_features(t, ["customers:age"])
    assert out.select(t.column_names).equals(t)
    assert out["age"].to_pylist() == [1, None]  # a null id matches nothing


def test_validation_errors_are_value_errors(q):
    with pytest.raises(ValidationError):
        q.get_historical_features(entity(), ["customers:nope"])
