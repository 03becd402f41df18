"""Infer feature definitions from a pandas DataFrame or a pyarrow Table.

Mapping (the reference maps only int/float/string and rejects the rest; ours goes further):
  integer -> Integral;  float -> Fractional;  string/object of str -> String;
  bool -> Integral (0/1);  datetime64 (tz-aware, or naive taken as UTC) -> String (ISO-8601 'Z');
  list column (object of lists / Arrow list) -> List of the element type;
  Arrow fixed-size list of floats -> Vector.
Every column that cannot be mapped is reported at once, with its dtype and why.

Ingest must turn frame values into what the inferred types accept; :func:`coerce_frame_value`
does that (bool -> 0/1, datetime -> ISO text, NaN/NaT/NA -> None, numpy -> Python), and
:func:`frame_records` yields ready-to-validate dicts from a whole frame.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

from schemas.errors import DefinitionError
from schemas.eventtime import format_iso, parse_event_time
from schemas.names import MAX_VECTOR_DIMENSION, name_is_valid
from schemas.types import CollectionType, FeatureDefinition, ScalarType


class InferenceError(DefinitionError):
    """Some columns cannot become features; ``problems`` maps each to the reason."""

    def __init__(self, message: str, problems: dict[str, str]) -> None:
        super().__init__(message)
        self.problems = problems


class _Unmappable(Exception):
    pass


# ---------------------------------------------------------------- Arrow

def _arrow_scalar(t: Any) -> ScalarType:
    import pyarrow as pa
    import pyarrow.types as pt

    if pt.is_boolean(t) or pt.is_integer(t):
        return ScalarType.INTEGRAL
    if pt.is_floating(t) or pt.is_decimal(t):
        return ScalarType.FRACTIONAL
    if pt.is_string(t) or pt.is_large_string(t) or getattr(pt, "is_string_view", lambda _: False)(t):
        return ScalarType.STRING
    if pt.is_timestamp(t):
        return ScalarType.STRING
    if pt.is_dictionary(t):
        return _arrow_scalar(t.value_type)
    if pt.is_date(t):
        raise _Unmappable("a date has no time of day; cast it to timestamp or string")
    if pt.is_null(t):
        raise _Unmappable("every value is null, so the type is unknown; declare it explicitly")
    if pt.is_binary(t) or pt.is_large_binary(t) or pt.is_fixed_size_binary(t):
        raise _Unmappable("binary data has no feature type; decode it to string or base64 first")
    del pa
    raise _Unmappable("no feature type holds this; cast it to int64, float64, string or a list of those")


def _arrow_definition(name: str, t: Any) -> FeatureDefinition:
    import pyarrow.types as pt

    if pt.is_fixed_size_list(t):
        elem = t.value_type
        if (pt.is_floating(elem) or pt.is_integer(elem)) and 1 <= t.list_size <= MAX_VECTOR_DIMENSION:
            return FeatureDefinition(name, ScalarType.FRACTIONAL, CollectionType.VECTOR, t.list_size)
        if pt.is_floating(elem):
            raise _Unmappable(f"a vector of dimension {t.list_size} is beyond 1..{MAX_VECTOR_DIMENSION}")
        return FeatureDefinition(name, _arrow_list_elem(elem), CollectionType.LIST)
    if pt.is_list(t) or pt.is_large_list(t) or getattr(pt, "is_list_view", lambda _: False)(t):
        return FeatureDefinition(name, _arrow_list_elem(t.value_type), CollectionType.LIST)
    return FeatureDefinition(name, _arrow_scalar(t))


def _arrow_list_elem(elem: Any) -> ScalarType:
    import pyarrow.types as pt

    if pt.is_list(elem) or pt.is_large_list(elem) or pt.is_fixed_size_list(elem) or pt.is_struct(elem):
        raise _Unmappable("nested lists/structs cannot be a feature; a List holds scalars")
    try:
        return _arrow_scalar(elem)
    except _Unmappable as exc:
        raise _Unmappable(f"list elements: {exc}") from None


# ---------------------------------------------------------------- pandas

def _python_scalar(values: Sequence[Any], what: str) -> ScalarType:
    types = {type(v) for v in values}
    if all(issubclass(t, str) for t in types):
        return ScalarType.STRING
    if all(issubclass(t, bool) or _is_numpy_bool(t) for t in types):
        return ScalarType.INTEGRAL
    if all(_is_int_type(t) for t in types):
        return ScalarType.INTEGRAL
    if all(_is_int_type(t) or _is_float_type(t) for t in types):
        return ScalarType.FRACTIONAL
    if all(issubclass(t, datetime) or t.__name__ == "datetime64" for t in types):
        return ScalarType.STRING
    names = ", ".join(sorted(t.__name__ for t in types))
    raise _Unmappable(f"{what} are of types {names}; a feature needs one of str, int, float, bool, datetime")


def _is_numpy_bool(t: type) -> bool:
    import numpy as np

    return issubclass(t, np.bool_)


def _is_int_type(t: type) -> bool:
    import numpy as np

    return (issubclass(t, int) and not issubclass(t, bool)) or issubclass(t, np.integer)


def _is_float_type(t: type) -> bool:
    import numpy as np

    return issubclass(t, float) or issubclass(t, np.floating)


def _pandas_definition(name: str, series: Any) -> FeatureDefinition:
    import pandas as pd
    from pandas.api import types as pdt

    dtype = series.dtype
    if pdt.is_bool_dtype(dtype) or pdt.is_integer_dtype(dtype):
        return FeatureDefinition(name, ScalarType.INTEGRAL)
    if pdt.is_float_dtype(dtype):
        return FeatureDefinition(name, ScalarType.FRACTIONAL)
    if pdt.is_datetime64_any_dtype(dtype):
        return FeatureDefinition(name, ScalarType.STRING)
    if isinstance(dtype, pd.CategoricalDtype):
        return FeatureDefinition(name, _python_scalar(list(dtype.categories), "categories"))
    if isinstance(dtype, pd.ArrowDtype):
        return _arrow_definition(name, dtype.pyarrow_dtype)
    if pdt.is_string_dtype(dtype) and not pdt.is_object_dtype(dtype):
        return FeatureDefinition(name, ScalarType.STRING)
    if pdt.is_object_dtype(dtype):
        values = [v for v in series.tolist() if not _missing(v)]
        if not values:
            raise _Unmappable("every value is null, so the type is unknown; declare it explicitly")
        if all(isinstance(v, (list, tuple)) or _is_1d_array(v) for v in values):
            elems = [x for v in values for x in (v.tolist() if _is_1d_array(v) else v)]
            if any(isinstance(x, (list, tuple, dict)) or _is_1d_array(x) for x in elems):
                raise _Unmappable("nested lists cannot be a feature; a List holds scalars")
            if not elems:
                raise _Unmappable("every list is empty, so the element type is unknown; declare it explicitly")
            if any(_missing(x) for x in elems):
                raise _Unmappable("lists contain nulls; List elements cannot be null")
            return FeatureDefinition(name, _python_scalar(elems, "list elements"), CollectionType.LIST)
        if any(isinstance(v, (dict, set, frozenset)) for v in values):
            raise _Unmappable("it holds dicts or sets; a feature is a scalar or a list of scalars")
        if any(isinstance(v, (list, tuple)) or _is_1d_array(v) for v in values):
            raise _Unmappable("it mixes lists with other values")
        return FeatureDefinition(name, _python_scalar(values, "values"))
    raise _Unmappable("no feature type holds this dtype; cast it to int64, float64, string or a list of those")


def _is_1d_array(v: Any) -> bool:
    return type(v).__name__ == "ndarray" and getattr(v, "ndim", 0) == 1


def _missing(v: Any) -> bool:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return True
    return type(v).__name__ in ("NAType", "NaTType")


# ---------------------------------------------------------------- entry point

def infer_definitions(data: Any, *, record_identifier_name: str | None = None,
                      event_time_name: str | None = None) -> list[FeatureDefinition]:
    """Feature definitions for every column of a pandas DataFrame or pyarrow Table.

    An event-time column that holds numbers becomes Fractional (epoch seconds); the record
    identifier must come out String or Integral. InferenceError lists every bad column.
    """
    columns: list[tuple[Any, Any]]
    kind = type(data).__module__.split(".")[0]
    if kind == "pyarrow" and hasattr(data, "schema"):
        columns = [(f.name, f.type) for f in data.schema]
        convert = _arrow_definition
        describe = str
    elif kind == "pandas" and hasattr(data, "dtypes"):
        columns = [(c, data[c]) for c in data.columns]
        convert = _pandas_definition
        describe = lambda s: str(s.dtype)  # noqa: E731
    else:
        raise InferenceError(f"cannot infer features from a {type(data).__name__}; pass a pandas "
                             "DataFrame or a pyarrow Table", {})
    problems: dict[str, str] = {}
    defs: list[FeatureDefinition] = []
    for col, payload in columns:
        label = str(col)
        if not name_is_valid(col):
            problems[label] = (f"{describe(payload)}: invalid feature name; a name is 1-64 letters, digits, "
                               "'-' or '_', starting and ending with a letter or digit")
            continue
        try:
            fd = convert(col, payload)
        except _Unmappable as exc:
            problems[label] = f"{describe(payload)}: {exc}"
            continue
        if col == event_time_name and fd.is_scalar and fd.type is ScalarType.INTEGRAL:
            fd = FeatureDefinition(col, ScalarType.FRACTIONAL)  # epoch seconds
        defs.append(fd)
    present = {fd.name: fd for fd in defs}
    for role, wanted, ok in (("record identifier", record_identifier_name,
                              (ScalarType.STRING, ScalarType.INTEGRAL)),
                             ("event time", event_time_name, (ScalarType.STRING, ScalarType.FRACTIONAL))):
        if wanted is None or wanted in problems:
            continue
        fd = present.get(wanted)
        if fd is None:
            problems[str(wanted)] = f"the {role} column is not in the data (columns: " \
                                    f"{', '.join(str(c) for c, _ in columns)})"
        elif not fd.is_scalar or fd.type not in ok:
            problems[str(wanted)] = (f"the {role} was inferred as {fd.describe()}; it must be "
                                     f"{' or '.join(t.value for t in ok)}")
    if problems:
        lines = "; ".join(f"column {c!r} ({why})" for c, why in problems.items())
        raise InferenceError(f"cannot infer feature definitions for {len(problems)} column(s): {lines}",
                             problems)
    return defs


# ---------------------------------------------------------------- values for ingest

def coerce_frame_value(value: Any, definition: FeatureDefinition) -> Any:
    """A value from a DataFrame/Table cell, made acceptable to the validator for ``definition``.

    NaN/NaT/NA/None -> None (missing feature); bool -> 0/1 (Integral); datetime/Timestamp/
    datetime64 -> ISO-8601 'Z' text for String features (naive taken as UTC, as inference
    does) or epoch seconds for Fractional; numpy scalars -> Python; arrays -> lists.
    """
    if _missing(value):
        return None
    if definition.collection is not None:
        if _is_1d_array(value):
            value = value.tolist()
        if isinstance(value, (list, tuple)):
            scalar = FeatureDefinition(definition.name, definition.type)
            return [coerce_frame_value(x, scalar) for x in value]
        return value
    if isinstance(value, datetime) or type(value).__name__ == "datetime64":
        ns = _naive_utc_ns(value)
        if definition.type is ScalarType.STRING:
            return format_iso(ns)
        return ns / 1e9 if ns % 1_000_000_000 else ns // 1_000_000_000
    if isinstance(value, bool) or getattr(getattr(value, "dtype", None), "kind", None) == "b":
        return int(value) if definition.type is not ScalarType.STRING else str(bool(value)).lower()
    item = getattr(value, "item", None)
    if item is not None and getattr(value, "ndim", None) == 0:
        return item()
    return value


def _naive_utc_ns(value: Any) -> int:
    if isinstance(value, datetime) and (value.tzinfo is None or value.utcoffset() is None):
        if hasattr(value, "tz_localize"):
            value = value.tz_localize("UTC")
        else:
            value = value.replace(tzinfo=UTC)
    return parse_event_time(value)


def frame_records(data: Any, definitions: Sequence[FeatureDefinition]) -> Iterator[dict[str, Any]]:
    """Rows of a DataFrame/Table as dicts of coerced values (columns not in ``definitions`` kept as is,
    so the validator reports them as unknown features)."""
    by_name = {d.name: d for d in definitions}
    kind = type(data).__module__.split(".")[0]
    rows = data.to_pylist() if kind == "pyarrow" else data.to_dict("records")
    for row in rows:
        yield {k: (coerce_frame_value(v, by_name[k]) if k in by_name else v) for k, v in row.items()}
