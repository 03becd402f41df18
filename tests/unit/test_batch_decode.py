"""schemas/batch.py on its own: the facts about Arrow's JSON reader that its exactness rests on.

Each test pins one: doubles rounded as orjson rounds them, integers never widened, types never
converted, and every row Arrow cannot prove left to the per-record path.
"""

from __future__ import annotations

import re
import struct

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.batch import decode_batch, iso_ns
from schemas.errors import RecordValidationError
from schemas.eventtime import iso_to_ns
from schemas.group import FeatureGroup
from schemas.types import FeatureDefinition
from schemas.validate import compile_validator
from schemas.wire import encode

G = FeatureGroup(name="g", record_identifier_name="rid", event_time_name="et", features=[
    FeatureDefinition("rid", "String"), FeatureDefinition("et", "String"), FeatureDefinition("i", "Integral"),
    FeatureDefinition("f", "Fractional"), FeatureDefinition("s", "String"), FeatureDefinition("lf", "Fractional", "List"),
])
V = compile_validator(G)
BASE = encode(V.validate({"rid": "r", "et": "2021-10-02T12:00:00Z", "f": 1.5}))


def _with(text: bytes) -> tuple[bytes, bytes, list]:
    """The base message with the Fractional feature's JSON text replaced by ``text``."""
    key, value, headers = BASE
    assert b'"f":1.5' in value
    return key, value.replace(b'"f":1.5', b'"f":' + text), headers


def _decode(*msgs: tuple[bytes | None, bytes | None, object]):
    return decode_batch(G, [m[0] for m in msgs], [m[1] for m in msgs], [m[2] for m in msgs])


def _f(cols, i: int = 0) -> float:
    return cols.record.field("f")[i].as_py()


def _bits(x: float) -> bytes:
    return struct.pack("<d", x)


@settings(max_examples=400, deadline=None)
@given(st.one_of(
    st.floats(allow_nan=False, allow_infinity=False).map(lambda x: repr(x).encode()),
    st.floats(allow_nan=False, allow_infinity=False).map(lambda x: f"{x:.25e}".encode()),
    st.from_regex(r"\A-?(0|[1-9][0-9]{0,30})(\.[0-9]{1,30})?([eE][+-]?[0-9]{1,3})?\Z").map(str.encode),
))
def test_doubles_are_parsed_bit_for_bit_as_orjson_parses_them(text: bytes) -> None:
    try:
        expected = orjson.loads(text)
    except orjson.JSONDecodeError:
        expected = None
    cols = _decode(_with(text), _with(b"2.5"))  # a second row: the batch is parsed as a batch
    if expected is None or expected != expected or abs(float(expected)) == float("inf"):
        assert not cols.fast[0]  # orjson refuses it: the per-record path says why
        return
    if not cols.fast[0]:
        # Left to the per-record path (correct, only slower): a negative zero ("-0" is +0.0 there,
        # -0.0 to Arrow), and texts with 3-digit exponents RapidJSON refuses ("0E400")
        assert (float(expected) == 0.0 and text.startswith(b"-")) or re.search(rb"[eE][+-]?[0-9]{3}", text)
        return
    assert _bits(_f(cols)) == _bits(float(expected))


def test_negative_zero_is_left_to_the_per_record_path() -> None:
    cols = _decode(_with(b"-0"), _with(b"-0.0"), _with(b"0"))
    assert cols.fast.tolist() == [False, False, True]


@pytest.mark.parametrize("text", [b"NaN", b"-Infinity", b"Infinity", b"1e400", b"-1.7976931348623159e308"])
def test_nan_and_infinity_text_is_never_proven(text: bytes) -> None:
    cols = _decode(_with(text), BASE)
    assert not cols.fast[0] and cols.fast[1]


@pytest.mark.parametrize(("field", "text"), [
    (b'"i":', b"9223372036854775808"),         # past int64: never a double
    (b'"i":', b"-9223372036854775809"),
    (b'"i":', b"42.0"), (b'"i":', b'"42"'), (b'"i":', b"true"), (b'"i":', b"1e3"),
    (b'"s":', b"42"),                          # a String feature given a number
    (b'"s":', b"4.5"), (b'"s":', b"false"),
])
def test_values_of_another_json_type_are_never_converted(field: bytes, text: bytes) -> None:
    key, value, headers = BASE
    bad = value.replace(b'"i":null', field + text) if field == b'"i":' else value.replace(b'"s":null', field + text)
    assert bad != value
    cols = _decode((key, bad, headers), BASE, BASE)
    assert cols.fast.tolist() == [False, True, True]


def test_an_integer_for_a_fractional_feature_is_the_double_python_makes() -> None:
    cols = _decode(_with(b"9007199254740993"), _with(str(2**70 + 1).encode()))
    assert cols.fast.all()
    assert _bits(_f(cols, 0)) == _bits(float(9007199254740993))
    assert _bits(_f(cols, 1)) == _bits(float(2**70 + 1))


@pytest.mark.parametrize("value", [
    b"", b"  ", b"{}", b"{}{}", b"[1]", b"null", b"\xff\xfe", BASE[1] + b"{}", BASE[1].replace(b",", b",\n", 1),
    BASE[1][:-1] + b',"op":"put"}',           # a duplicate key (orjson keeps the last, Arrow refuses)
    BASE[1][:-1] + b',"future":NaN}',          # orjson refuses the whole value
    BASE[1].replace(b'"op"', b'"\xc3":1,"op"'),  # invalid UTF-8
])
def test_rows_arrow_cannot_prove_are_left_to_the_per_record_path_without_shifting_the_others(value: bytes) -> None:
    cols = _decode(BASE, (BASE[0], value, BASE[2]), BASE)
    assert cols.fast.tolist() == [True, False, True]
    assert cols.id.to_pylist()[2] == "r"


@settings(max_examples=300, deadline=None)
@given(st.from_regex(r"\A[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,10})?[Zz]?\Z"))
def test_iso_event_times_are_proven_only_when_the_per_record_parser_agrees(text: str) -> None:
    import pyarrow as pa

    ok, ns = iso_ns(pa.array([text]))
    try:
        expected = iso_to_ns(text)
    except RecordValidationError:
        expected = None
    if ok[0]:
        assert int(ns[0]) == expected
    # canonical texts the parser accepts are proven (the fast path is not empty)
    if expected is not None and text.endswith("Z") and len(text.split(".")[-1]) <= 10:
        assert ok[0]


def test_the_last_nanosecond_int64_holds_is_proven_and_the_next_is_not() -> None:
    import pyarrow as pa

    ok, ns = iso_ns(pa.array(["2262-04-11T23:47:16.854775807Z", "2262-04-11T23:47:16.854775808Z",
                              "1970-01-01T00:00:00Z", "1969-12-31T23:59:59.999999999Z", "2024-02-29T00:00:00Z",
                              "2023-02-29T00:00:00Z"]))
    assert ok.tolist() == [True, False, True, False, True, False]
    assert int(ns[0]) == 2**63 - 1


def test_headers_a_door_did_not_write_are_left_to_the_per_record_path() -> None:
    key, value, headers = BASE
    newer = [(n, b"2" if n == "fs-schema-version" else v) for n, v in headers]
    odd = [(n, b"0x1" if n == "fs-schema-version" else v) for n, v in headers]
    other_format = [("fs-format", b"avro/1")]
    cols = _decode((key, value, newer), (key, value, odd), (key, value, other_format), (key, value, None), BASE)
    assert cols.fast.tolist() == [False, False, False, True, True]
    assert cols.schema_version.tolist()[3:] == [1, 1]


def test_a_key_that_is_not_the_id_is_not_proven() -> None:
    key, value, headers = BASE
    cols = _decode((b"other", value, headers), (None, value, headers), BASE)
    assert cols.fast.tolist() == [False, True, True]


def test_lists_with_nulls_or_non_finite_elements_are_not_proven() -> None:
    key, value, headers = BASE
    rows = [(key, value.replace(b'"lf":null', b'"lf":' + t), headers) for t in (b"[1.0,null]", b"[NaN]", b"[1,2.5]")]
    cols = _decode(*rows)
    assert cols.fast.tolist() == [False, False, True]
    assert cols.record.field("lf")[2].as_py() == [1.0, 2.5]


@pytest.mark.parametrize(("bad_rows", "max_calls"), [
    ([], 1),                      # one call for the batch
    ([700], 3),                   # a lone bad row: the batch, the rows before it, the rows after
    (list(range(0, 1000, 3)), 1 + 2 * 10 + 1000 // 64),  # a poison storm: bounded, the rest per record
])
def test_reader_calls_are_bounded_however_many_rows_are_bad(monkeypatch, bad_rows, max_calls) -> None:
    import schemas.batch as batch

    calls = []
    real = batch._read
    monkeypatch.setattr(batch, "_read", lambda plan, lines: calls.append(len(lines)) or real(plan, lines))
    msgs = [BASE] * 1000
    for i in bad_rows:
        msgs[i] = (BASE[0], b"garbage", BASE[2])
    cols = _decode(*msgs)
    assert len(calls) <= max_calls
    assert not cols.fast[bad_rows].any()
    if len(bad_rows) <= 1:
        assert cols.fast.sum() == 1000 - len(bad_rows)


def _api_time(text: bytes) -> tuple[bytes, bytes, list]:
    key, value, headers = BASE
    return key, value, [(n, text if n == "fs-api-invocation-time" else v) for n, v in headers]


def test_a_real_api_invocation_time_of_19_digits_is_proven_up_to_the_int64_limit() -> None:
    # time.time_ns() has 19 digits: rows stamped by a door must take the fast path (they once all
    # fell to the per-record path, which took them, only slower).
    now = b"1764700000123456789"
    cols = _decode(_api_time(now), _api_time(now))  # every row the doors' shape: the vector pass
    assert cols.fast.tolist() == [True, True]
    assert cols.api_invocation_time_ns.tolist() == [int(now)] * 2
    top, over = str(2**63 - 1).encode(), str(2**63).encode()
    cols = _decode(_api_time(top), _api_time(over), _api_time(b"0" * 20 + b"1"), _api_time(now))
    assert cols.fast.tolist() == [True, False, False, True]
    assert cols.api_invocation_time_ns.tolist()[0] == 2**63 - 1
