"""JSON texts of whole Arrow columns against orjson, value by value, and the byte scans behind them.

``has_control_chars`` and the string bodies read the UTF-8 bytes of a column (offsets and data buffers)
instead of running a regex: these tests give them slices, chunked arrays, both offset widths,
multi-byte characters and nulls, and compare with a per-value answer in Python or orjson.
"""

from __future__ import annotations

import orjson
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.column_checks import has_control_chars, holds_json_escapes
from schemas.column_json import Quoted, join_texts, json_string_bodies, json_strings

# Text that reaches every branch: plain ASCII, quotes, backslashes, control characters, multi-byte
# characters whose continuation bytes must not be read as ASCII, and empty strings.
ALPHABET = st.sampled_from(list('ab"\\\x00\x1f\n é€𝄞\x7f'))
TEXTS = st.lists(st.none() | st.text(ALPHABET, max_size=6), min_size=0, max_size=12)


def _array(values: list[str | None], large: bool, start: int) -> pa.Array:
    """``values`` as a (large_)string array that is a slice of a longer one, so offsets don't start at 0."""
    padded = ["\x00\"pad"] * start + values + ['tail"\\']
    return pa.array(padded, pa.large_string() if large else pa.string()).slice(start, len(values))


@settings(max_examples=300, deadline=None)
@given(values=TEXTS, large=st.booleans(), start=st.integers(0, 3))
def test_byte_scans_agree_with_a_scan_of_each_value(values, large, start):
    arr = _array(values, large, start)
    control = [v is not None and any(ord(c) < 0x20 for c in v) for v in values]
    assert has_control_chars(arr).tolist() == control
    chunked = pa.chunked_array([arr.slice(0, len(values) // 2), arr.slice(len(values) // 2)], arr.type)
    assert has_control_chars(chunked).tolist() == control
    escaped = [v is not None and any(ord(c) < 0x20 or c in '"\\' for c in v) for v in values]
    assert holds_json_escapes(arr) == any(escaped) == holds_json_escapes(chunked)


@settings(max_examples=300, deadline=None)
@given(values=TEXTS, large=st.booleans(), start=st.integers(0, 3))
def test_json_strings_are_orjsons_text_of_each_value(values, large, start):
    arr = _array(values, large, start)
    expected = [None if v is None else orjson.dumps(v).decode() for v in values]
    assert json_strings(arr).to_pylist() == expected
    chunked = pa.chunked_array([arr.slice(0, len(values) // 2), arr.slice(len(values) // 2)], arr.type)
    assert json_strings(chunked).to_pylist() == expected
    body = json_string_bodies(arr)
    if any(v is not None and any(ord(c) < 0x20 for c in v) for v in values):
        assert body is None  # orjson writes control characters its own way: no body to fold quotes around
    else:
        assert [None if b is None else f'"{b}"' for b in body.to_pylist()] == expected


@settings(max_examples=200, deadline=None)
@given(values=TEXTS, ints=st.lists(st.none() | st.integers(-(2**63), 2**63 - 1), min_size=12, max_size=12))
def test_join_texts_writes_nulls_as_null_and_folds_quotes_only_around_values(values, ints):
    n = len(values)
    ints = ints[:n]
    body = json_string_bodies(pa.array(values, pa.string()))
    strings = json_strings(pa.array(values, pa.string()))
    digits = pa.array([None if i is None else str(i) for i in ints], pa.large_string())
    parts = ["{", "a:", strings if body is None else Quoted(body), ",b:", digits, ",c:", Quoted(digits), "}"]
    expected = [
        "{a:" + ("null" if v is None else orjson.dumps(v).decode()) + ",b:" + ("null" if i is None else str(i))
        + ",c:" + ("null" if i is None else f'"{i}"') + "}"
        for v, i in zip(values, ints, strict=True)
    ]
    if n:
        assert join_texts(parts).to_pylist() == expected


def test_a_column_of_empty_or_null_strings_has_no_data_buffer_to_read():
    for arr in (pa.array(["", None, ""], pa.string()), pa.array([None, None], pa.large_string()),
                pa.array([], pa.string())):
        assert not has_control_chars(arr).any()
        assert json_strings(arr).to_pylist() == [None if v is None else '""' for v in arr.to_pylist()]
