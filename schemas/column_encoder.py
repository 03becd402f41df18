"""A group's put messages, encoded from Arrow columns at once: the bulk twin of validate + encode_value.

``compile_column_encoder(group)`` builds, once per group version, a plan over its features; ``encode``
takes an Arrow table (columns named by features) and returns, for the rows it proves valid with the
vectorized checks of ``schemas.column_checks``, the Kafka key and the JSON value of each, byte for byte
what ``RecordValidator.validate`` + ``wire.encode_value`` give for the same row. Every other row is
listed as not done: the caller hands exactly those to the per-record validator, which accepts them or
gives the reason (so no rejection reason is ever written twice).

What is proven here, per row: the record identifier (present, non-empty, at most 2 KiB of UTF-8, or an
int64), the event time (the strict ISO 'Z' form within the accepted range, or epoch seconds), every value
of its feature's Arrow type (int64, finite doubles, text), values and record within their byte limits,
Vector dimensions, no null inside a collection, no duplicate in a Set. A column of any other Arrow type
(a float column for an Integral feature, say) sends its non-null rows to the per-record path, which
coerces them as it always has.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from schemas import column_checks as cc
from schemas.column_json import (
    TEXT,
    Quoted,
    element_texts,
    join_texts,
    json_floats,
    json_ints,
    json_lists,
    json_string_bodies,
    json_strings,
)
from schemas.eventtime import seconds_to_ns
from schemas.group import FeatureGroup
from schemas.names import MAX_RECORD_BYTES, MAX_RECORD_ID_BYTES, MAX_VALUE_BYTES
from schemas.types import CollectionType, FeatureDefinition, ScalarType
from schemas.validate import FLOAT_TEXT_MAX, INT_TEXT_MAX
from schemas.wire import put_value_frame

_SCALAR = {ScalarType.STRING: "str", ScalarType.INTEGRAL: "int", ScalarType.FRACTIONAL: "float"}
_TEXT_BOUND = {"int": INT_TEXT_MAX, "float": FLOAT_TEXT_MAX}


@dataclass(frozen=True)
class ColumnEncoded:
    """Rows proven valid (``done``, positions in the table, ascending), their keys and values."""

    done: np.ndarray
    keys: list[bytes]
    values: list[bytes]


def _kind_of(t: Any) -> str | None:
    """'str', 'int' or 'float' when Arrow type ``t`` holds that scalar kind exactly, else None."""
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return "str"
    if pa.types.is_signed_integer(t) or t in (pa.uint8(), pa.uint16(), pa.uint32()):
        return "int"  # widened to int64 exactly; uint64 may not fit and goes per record
    if t in (pa.float64(), pa.float32()):
        return "float"  # a float32 widens to the same double Python's float() of it gives
    return None


def json_string_texts(col: Any) -> Any:
    """A string column's JSON texts for ``join_texts``: as Quoted bodies when orjson is not needed."""
    body = json_string_bodies(col)
    return json_strings(col) if body is None else Quoted(body)


def _list_value_type(t: Any) -> Any:
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return t.value_type
    return None


class ColumnEncoder:
    """The bulk encoding plan of one group version; build with :func:`compile_column_encoder`."""

    def __init__(self, group: FeatureGroup) -> None:
        self.group = group
        self._rid = group.record_identifier
        self._et = group.event_time
        self._features = group.features
        # '"name":' before each member, the first right after the record's opening brace.
        self._labels = [("" if i == 0 else ",") + f'"{f.name}":' for i, f in enumerate(group.features)]

    def encode(self, table: Any, *, target_stores: frozenset[str], ttl_seconds: int | None) -> ColumnEncoded:
        """Keys and values of the rows of ``table`` proven valid (see the module docstring)."""
        n = table.num_rows
        names = set(table.column_names)
        if len(names) != len(table.column_names) or not names <= set(self.group.feature_names):
            return ColumnEncoded(np.zeros(0, dtype=np.int64), [], [])  # every row explains itself per record
        ok = np.ones(n, dtype=bool)
        size = np.zeros(n, dtype=np.int64)
        texts: dict[str, Any] = {}
        columns = {name: cc.one_array(table.column(name)) for name in table.column_names}
        rid = columns.get(self._rid.name)
        et = columns.get(self._et.name)
        if rid is None or et is None or n == 0:
            return ColumnEncoded(np.zeros(0, dtype=np.int64), [], [])
        id_json, keys, texts[self._rid.name] = self._record_id(rid, ok, size)
        ns = self._event_time(et, ok, size, texts)
        for fd in self._features:
            if fd.name in (self._rid.name, self._et.name):
                continue
            col = columns.get(fd.name)
            if col is None:
                continue
            texts[fd.name] = self._value(fd, col, ok, size)
        ok &= size <= MAX_RECORD_BYTES
        done = np.flatnonzero(ok)
        if not len(done):
            return ColumnEncoded(done, [], [])
        # Most parts are valid throughout: then nothing is taken (a copy of every column).
        take = None if len(done) == n else pa.array(done)

        def pick(text: Any) -> Any:
            return text if take is None else text.take(take)

        head, between, record_open, tail = (b.decode("utf-8") for b in put_value_frame(target_stores, ttl_seconds))
        parts: list[Any] = [head, pick(id_json), between, pc.cast(pa.array(ns[done]), TEXT), record_open]
        for label, fd in zip(self._labels, self._features, strict=True):
            text = texts.get(fd.name)
            parts.append(label + ("null" if text is None else ""))
            if text is not None:
                parts.append(pick(text))
        parts.append(tail)
        values = pc.cast(join_texts(parts), pa.large_binary()).to_pylist()
        return ColumnEncoded(done, pc.cast(pick(keys), pa.large_binary()).to_pylist(), values)

    # -- the identifier and the event time ---------------------------------------------------------
    def _record_id(self, col: Any, ok: np.ndarray, size: np.ndarray) -> tuple[Any, Any, Any]:
        """(JSON text of the message id, key text, JSON text of the stored value); rows whose identifier
        is not proven valid are cleared."""
        kind = _kind_of(col.type)
        if self._rid.type is ScalarType.STRING and kind == "str":
            n = cc.utf8_bytes(col)
            ok &= cc.valid_mask(col) & (n > 0) & (n <= MAX_RECORD_ID_BYTES)
            size += n
            text = pc.cast(col, TEXT)
            quoted = json_string_texts(text)
            return quoted, text, quoted
        if self._rid.type is ScalarType.INTEGRAL and kind == "int":
            ok &= cc.valid_mask(col)
            size += INT_TEXT_MAX
            digits = json_ints(col)
            return Quoted(digits), digits, digits
        ok[:] = False  # coerced per record (an Integral id given as text, ...)
        empty = pa.nulls(len(col), TEXT)
        return empty, empty, empty

    def _event_time(self, col: Any, ok: np.ndarray, size: np.ndarray, texts: dict[str, Any]) -> np.ndarray:
        """Nanoseconds of each event time; its JSON text (stored as given) goes into ``texts``."""
        kind = _kind_of(col.type)
        name = self._et.name
        if self._et.type is ScalarType.STRING and kind == "str":
            ns, good = cc.iso_utc_to_ns(col)
            ok &= good
            size += FLOAT_TEXT_MAX + cc.utf8_bytes(col)
            texts[name] = json_string_texts(col)  # the strict form needs no escape, but stays exact if it did
            return ns
        if self._et.type is ScalarType.FRACTIONAL and kind == "int":
            values = pc.cast(col, pa.int64()).to_numpy(zero_copy_only=False)
            ns, good = cc.epoch_int_seconds_to_ns(np.where(cc.valid_mask(col), values, -1))
            ok &= good
            size += FLOAT_TEXT_MAX
            texts[name] = json_ints(col)
            return ns
        if self._et.type is ScalarType.FRACTIONAL and col.type == pa.float64():
            # Exact seconds -> nanoseconds goes through each double's shortest text: the one parser.
            good = cc.valid_mask(col) & cc.finite(col)
            ns = np.zeros(len(col), dtype=np.int64)
            for i, v in zip(np.flatnonzero(good).tolist(), col.filter(pa.array(good)).to_pylist(), strict=True):
                try:
                    ns[i] = seconds_to_ns(v)
                except ValueError:  # RecordValidationError, out of range: the per-record path gives the reason
                    good[i] = False
            ok &= good
            size += FLOAT_TEXT_MAX
            texts[name] = json_floats(col)
            return ns
        ok[:] = False
        return np.zeros(len(col), dtype=np.int64)

    # -- other features ----------------------------------------------------------------------------
    def _value(self, fd: FeatureDefinition, col: Any, ok: np.ndarray, size: np.ndarray) -> Any:
        """JSON text of ``col`` for feature ``fd``; clears ``ok`` where a value is not proven valid."""
        if pa.types.is_null(col.type):
            return None  # all missing
        valid = cc.valid_mask(col)
        scalar = _SCALAR[fd.type]
        if fd.collection is None:
            if _kind_of(col.type) != scalar:
                ok &= ~valid  # coerced or refused per record; a null is no value in any type
                return None
            if scalar == "str":
                n = cc.utf8_bytes(col)
                ok &= n <= MAX_VALUE_BYTES
                size += n
                return json_string_texts(col)
            size += np.where(valid, _TEXT_BOUND[scalar], 0)
            if scalar == "int":
                return json_ints(col)
            ok &= cc.finite(col)
            return json_floats(col)
        value_type = _list_value_type(col.type)
        if value_type is None or _kind_of(value_type) != scalar:
            ok &= ~valid
            return None
        if not pa.types.is_large_list(col.type):
            col = pc.cast(col, pa.large_list(value_type))  # fixed-size lists have no offsets
        n_rows = len(col)
        values, lengths, parents = cc.list_parts(col)
        element_ok = cc.valid_mask(values)  # a collection holds no nulls
        if scalar == "float":
            element_ok &= cc.finite(values)
        good = cc.per_list(n_rows, parents, element_ok)
        if scalar == "str":
            n = cc.per_list_sum(n_rows, parents, cc.utf8_bytes(values))
        else:
            n = lengths * _TEXT_BOUND[scalar]
        good &= n <= MAX_VALUE_BYTES
        if fd.collection is CollectionType.VECTOR:
            good &= lengths == fd.dimension
        elif fd.collection is CollectionType.SET:
            good &= cc.no_duplicates(n_rows, parents, values)
        ok &= good | ~valid
        size += np.where(valid, n, 0)
        return json_lists(col, element_texts(values, scalar))


def compile_column_encoder(group: FeatureGroup) -> ColumnEncoder:
    """The bulk encoder of ``group``, built once and kept on the (immutable) group object."""
    enc = group.__dict__.get("_column_encoder")
    if enc is None:
        enc = ColumnEncoder(group)
        object.__setattr__(group, "_column_encoder", enc)
    return enc
