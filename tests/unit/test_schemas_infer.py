from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from schemas.errors import DefinitionError
from schemas.group import FeatureGroup
from schemas.infer import InferenceError, coerce_frame_value, frame_records, infer_definitions
from schemas.types import FeatureDefinition as F
from schemas.validate import validate_record


def describe(defs):
    return {d.name: d.describe() for d in defs}


def test_pandas_mapping():
    df = pd.DataFrame({
        "id": ["a", "b"], "n": np.array([1, 2], dtype="int32"), "nn": pd.array([1, None], dtype="Int64"),
        "x": [0.5, np.nan], "flag": [True, False], "ts": pd.to_datetime(["2021-01-01", "2021-01-02"]),
        "tsz": pd.to_datetime(["2021-01-01", "2021-01-02"]).tz_localize("UTC"),
        "tags": [["a"], ["b", "c"]], "nums": [np.array([1.0, 2.0]), np.array([3.0])], "ints": [[1], [2, 3]],
        "objstr": pd.Series(["p", None], dtype=object), "cat": pd.Categorical(["x", "y"]),
        "s": pd.Series(["u", "v"], dtype="string"), "objbool": pd.Series([True, None], dtype=object),
    })
    assert describe(infer_definitions(df, record_identifier_name="id", event_time_name="ts")) == {
        "id": "String", "n": "Integral", "nn": "Integral", "x": "Fractional", "flag": "Integral",
        "ts": "String", "tsz": "String", "tags": "List<String>", "nums": "List<Fractional>",
        "ints": "List<Integral>", "objstr": "String", "cat": "String", "s": "String", "objbool": "Integral"}


def test_numeric_event_time_becomes_fractional():
    df = pd.DataFrame({"id": [1], "t": [1633176000]})
    assert describe(infer_definitions(df, record_identifier_name="id", event_time_name="t")) == \
        {"id": "Integral", "t": "Fractional"}


def test_every_bad_column_reported():
    df = pd.DataFrame({
        "id": [1.5, 2.5], "c": [1 + 2j, 3j], "td": pd.to_timedelta([1, 2], "s"), "o": [{"a": 1}, None],
        "mix": ["a", 1], "bad name": [1, 2], "nul": [None, None], "nested": [[[1]], [[2]]],
        "nulls_in_list": [["a", None], ["b"]], "empty_lists": [[], []], "ok": [1, 2],
    })
    with pytest.raises(InferenceError) as exc:
        infer_definitions(df, record_identifier_name="id", event_time_name="missing")
    problems = exc.value.problems
    assert set(problems) == {"id", "c", "td", "o", "mix", "bad name", "nul", "nested", "nulls_in_list",
                             "empty_lists", "missing"}
    assert "complex128" in problems["c"] and "timedelta64" in problems["td"]
    assert "int, str" in problems["mix"] and "invalid feature name" in problems["bad name"]
    assert "record identifier was inferred as Fractional" in problems["id"]
    assert "not in the data" in problems["missing"]
    assert "11 column(s)" in str(exc.value)
    assert isinstance(exc.value, DefinitionError)


def test_arrow_mapping():
    t = pa.table({
        "id": pa.array([1, 2], pa.int64()), "u": pa.array([1, 2], pa.uint16()), "f": pa.array([1.0, 2.0], pa.float32()),
        "b": pa.array([True, False]), "s": pa.array(["a", "b"]), "ls": pa.array(["a", "b"], pa.large_string()),
        "t": pa.array([1, 2], pa.timestamp("ms")), "tz": pa.array([1, 2], pa.timestamp("ns", tz="UTC")),
        "v": pa.array([[1.0, 2.0], [3.0, 4.0]], pa.list_(pa.float32(), 2)),
        "l": pa.array([["a"], []], pa.list_(pa.string())), "li": pa.array([[1], [2]], pa.large_list(pa.int64())),
        "d": pa.array(["x", "y"]).dictionary_encode(), "dec": pa.array([1, 2], pa.decimal128(10, 2)),
        "fs": pa.array([["a"], ["b"]], pa.list_(pa.string(), 1)),
    })
    assert describe(infer_definitions(t, record_identifier_name="id", event_time_name="t")) == {
        "id": "Integral", "u": "Integral", "f": "Fractional", "b": "Integral", "s": "String", "ls": "String",
        "t": "String", "tz": "String", "v": "Vector<Fractional>[2]", "l": "List<String>", "li": "List<Integral>",
        "d": "String", "dec": "Fractional", "fs": "List<String>"}


def test_arrow_bad_columns_all_reported():
    t = pa.table({"bin": pa.array([b"x"]), "d": pa.array([1], pa.date32()), "n": pa.array([None], pa.null()),
                  "st": pa.array([{"a": 1}]), "ll": pa.array([[[1]]]),
                  "big": pa.array([[0.0] * 8193], pa.list_(pa.float64(), 8193)), "ok": pa.array([1])})
    with pytest.raises(InferenceError) as exc:
        infer_definitions(t)
    assert set(exc.value.problems) == {"bin", "d", "n", "st", "ll", "big"}
    assert "binary" in exc.value.problems["bin"] and "date" in exc.value.problems["d"]
    assert "8193" in exc.value.problems["big"]


@pytest.mark.parametrize("data", [[{"a": 1}], {"a": [1]}, None, np.zeros(3)])
def test_not_a_frame(data):
    with pytest.raises(InferenceError, match="pandas DataFrame or a pyarrow Table"):
        infer_definitions(data)


def test_frame_values_validate_with_inferred_types():
    df = pd.DataFrame({
        "id": ["a", "b"], "ts": pd.to_datetime(["2021-10-02T12:00:00.5", "2021-10-02T13:00:00"], format="ISO8601"),
        "flag": [True, False], "x": [0.5, np.nan], "n": pd.array([3, None], dtype="Int64"),
        "tags": [np.array(["p", "q"]), ["r"]], "when": pd.to_datetime(["2021-01-01", None]).tz_localize("UTC"),
    })
    defs = infer_definitions(df, record_identifier_name="id", event_time_name="ts")
    group = FeatureGroup("frame", "id", "ts", tuple(defs))
    msgs = [validate_record(group, r) for r in frame_records(df, defs)]
    assert msgs[0].record == {"id": "a", "ts": "2021-10-02T12:00:00.5Z", "flag": 1, "x": 0.5, "n": 3,
                              "tags": ["p", "q"], "when": "2021-01-01T00:00:00Z"}
    assert msgs[0].event_time_ns == 1633176000500000000
    assert msgs[1].record["x"] is None and msgs[1].record["n"] is None and msgs[1].record["when"] is None
    arrow_rows = list(frame_records(pa.Table.from_pandas(df, preserve_index=False), defs))
    assert validate_record(group, arrow_rows[0]).record == msgs[0].record


@pytest.mark.parametrize("value,fd,out", [
    (np.nan, F("x", "Fractional"), None), (pd.NaT, F("x", "String"), None), (pd.NA, F("x", "Integral"), None),
    (np.True_, F("x", "Integral"), 1), (True, F("x", "String"), "true"), (np.int64(5), F("x", "Integral"), 5),
    (datetime(2021, 10, 2, 12), F("x", "String"), "2021-10-02T12:00:00Z"),
    (datetime(2021, 10, 2, 12, tzinfo=UTC), F("x", "Fractional"), 1633176000),
    (np.datetime64("2021-10-02T12:00:00.5"), F("x", "Fractional"), 1633176000.5),
    (np.array([True, False]), F("x", "Integral", "List"), [1, 0]),
])
def test_coerce_frame_value(value, fd, out):
    got = coerce_frame_value(value, fd)
    assert got == out and type(got) is type(out)
