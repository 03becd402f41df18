"""JSON text of whole Arrow columns, byte for byte what orjson writes for each value.

Each function returns a ``large_string`` array of JSON texts, one per row, null where the value is null
(callers write ``null`` there). Rows a caller has not proven valid (``schemas.column_checks``) may hold
any text: the caller drops them.

- integers: Arrow's decimal cast (exact, and the same digits orjson writes);
- doubles: orjson itself, over the column as one numpy array. Arrow's own float-to-string is not
  orjson's shortest form (``1.6393574076896772e+10`` against ``16393574076.896772``), so it is not used;
  a JSON array of numbers never holds a comma inside a number, so the array text splits into values;
- strings: quotes and backslashes escaped by Arrow's replace, once for each of the two the column holds; a string
  holding a control character (which orjson writes as ``\\n``, ``\\u001f``...) is written by orjson itself, one value
  at a time (rare). ``Quoted`` keeps a string column's texts without their quotes, so that ``join_texts``
  writes the quotes as part of the literals around them instead of a pass over the column of its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from schemas.column_checks import has_control_chars, utf8_bytes_and_offsets

TEXT = pa.large_string()


def lit(text: str) -> Any:
    """A constant for ``pc.binary_join_element_wise``."""
    return pa.scalar(text, TEXT)


def concat(*parts: Any) -> Any:
    """Element-wise concatenation of texts (arrays or constants); null where any part is null."""
    return pc.binary_join_element_wise(*parts, lit(""))


@dataclass(frozen=True)
class Quoted:
    """JSON strings as their bodies: each value's text is ``"`` + body + ``"`` (null where the value is null)."""

    body: Any

    def take(self, indices: Any) -> Quoted:
        return Quoted(self.body.take(indices))


def join_texts(parts: Sequence[str | Any]) -> Any:
    """Row by row, the concatenation of ``parts``: constant texts (str), columns of JSON texts (a null
    is written ``null``) and ``Quoted`` columns. One pass of Arrow's element-wise join over all of them:
    neighbouring constants are merged, and a Quoted column without nulls lends its quotes to them."""
    pieces: list[str | Any] = []

    def add(piece: str | Any) -> None:
        if isinstance(piece, str) and pieces and isinstance(pieces[-1], str):
            pieces[-1] += piece
        else:
            pieces.append(piece)

    for part in parts:
        if isinstance(part, Quoted):
            if part.body.null_count == 0:
                add('"')
                add(part.body)
                add('"')
                continue
            part = concat(lit('"'), part.body, lit('"'))
        if not isinstance(part, str) and part.null_count:
            part = pc.fill_null(part, "null")
        add(part)
    return concat(*(lit(p) if isinstance(p, str) else p for p in pieces))


def json_ints(arr: Any) -> Any:
    return pc.cast(pc.cast(arr, pa.int64()), TEXT)


def json_floats(arr: Any) -> Any:
    """orjson's text of every double (nulls come out null)."""
    n = len(arr)
    if n == 0:
        return pa.array([], TEXT)
    values = pc.cast(arr, pa.float64()).to_numpy(zero_copy_only=False)  # nulls become NaN
    body = orjson.dumps(np.ascontiguousarray(values), option=orjson.OPT_SERIALIZE_NUMPY)[1:-1]
    texts = pc.list_flatten(pc.split_pattern(pa.array([body.decode("ascii")], TEXT), ","))
    return pc.if_else(pc.is_valid(arr), texts, pa.scalar(None, TEXT))


def json_string_bodies(arr: Any) -> Any | None:
    """What goes between the quotes of each value's JSON string (null where the value is null), or None
    when a value holds a control character, which only orjson writes the way orjson does."""
    arr = pc.cast(arr, TEXT)
    data, _offsets = utf8_bytes_and_offsets(arr)
    # In UTF-8 a byte below 0x20 is always that control character (the bytes of multi-byte characters
    # are 0x80 and above). One in a null value's hidden bytes, if any, only costs the slower way.
    if (data < 0x20).any():
        return None
    return _escape_quotes(arr, data)


def _escape_quotes(arr: Any, data: np.ndarray) -> Any:
    """``arr`` (large_string) with a backslash before each quote and backslash: Arrow's replace, once for
    each of the two that the column's bytes hold (a memchr over them tells). The benchmark's 700-byte note
    (60 quotes a value), read from JSON Lines blocks: 1.13-1.15 µs a value for ``json_string_bodies``,
    against 1.42-1.46 with one Python replace over the column's bytes and every value's offsets moved by
    numpy (the quotes found, then searched for each value's start)."""
    raw = data.tobytes()
    if b"\\" in raw:  # first: the backslashes the quotes' escapes add must not be escaped again
        arr = pc.replace_substring(arr, "\\", "\\\\")
    if b'"' in raw:
        arr = pc.replace_substring(arr, '"', '\\"')
    return arr


def json_strings(arr: Any) -> Any:
    arr = pc.cast(arr, TEXT)
    body = json_string_bodies(arr)
    if body is not None:
        return concat(lit('"'), body, lit('"'))
    escaped = pc.replace_substring(pc.replace_substring(arr, "\\", "\\\\"), '"', '\\"')
    quoted = concat(lit('"'), escaped, lit('"'))
    control = has_control_chars(arr)
    where = np.flatnonzero(control)
    by_orjson = [orjson.dumps(v).decode("utf-8") for v in arr.take(pa.array(where)).to_pylist()]
    patch = np.full(len(arr), None, dtype=object)
    patch[where] = by_orjson
    return pc.if_else(pa.array(control), pa.array(patch, TEXT), quoted)


def json_lists(arr: Any, element_texts: Any) -> Any:
    """``[a,b,...]`` per list, from the JSON texts of its elements (``column_checks.list_parts`` order);
    null lists stay null."""
    offsets = pc.cast(arr.offsets, pa.int64())
    offsets = pc.subtract(offsets, offsets[0])
    lists = pa.LargeListArray.from_arrays(offsets, element_texts)
    joined = pc.binary_join(lists, lit(","))
    return pc.if_else(pc.is_valid(arr), concat(lit("["), joined, lit("]")), pa.scalar(None, TEXT))


def element_texts(values: Any, scalar: str) -> Any:
    """JSON texts of a list column's flattened elements, by the scalar kind ('str', 'int', 'float')."""
    if scalar == "str":
        return json_strings(values)
    if scalar == "int":
        return json_ints(values)
    return json_floats(values)
