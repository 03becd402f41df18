"""Exact values from file text: a CSV cell or a JSON value in the type of its feature.

Nothing here goes through float64 on the way to an integer, and every decimal text becomes a
double through a correctly rounded parser (Python's ``float`` and orjson both are), so a value
reads as exactly what the file says. What cannot be represented raises :class:`CellError`
(the row is rejected); what is merely not of the feature's type is passed on unchanged, and the
validator (``schemas.validate``) rejects it with the reason, as it does for every input form.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson

from schemas.group import FeatureGroup
from schemas.types import INT64_MAX, INT64_MIN, CollectionType, FeatureDefinition, ScalarType

_INT_RE = re.compile(r"[+-]?[0-9]{1,19}")
_DECIMAL_RE = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_DOUBLE_MAX = "1.7976931348623157e308"
_MAX_NUMBER_TEXT = 400  # longer "numbers" are left to the validator, which refuses them

Converter = Callable[[str], Any]


class CellError(ValueError):
    """A value in a file that cannot be represented in its feature's type; rejects its row."""

    def __init__(self, reason: str, feature: str | None = None) -> None:
        super().__init__(reason)
        self.feature = feature


def _integral(text: str) -> Any:
    if _INT_RE.fullmatch(text):
        return int(text)  # the validator checks the int64 range and names the feature
    if len(text) <= _MAX_NUMBER_TEXT and _DECIMAL_RE.fullmatch(text):
        # A whole number written with a fraction or exponent ("42.0", pandas' way of writing an
        # integer column that had an empty cell): exact through Decimal, never through a double.
        d = Decimal(text)
        if d == d.to_integral_value():
            if d.adjusted() > 18:
                raise CellError("it does not fit in a signed 64-bit integer "
                                f"({INT64_MIN}..{INT64_MAX})")
            return int(d)
    return text  # not an integer: the validator says why


def _fractional(text: str) -> Any:
    if len(text) <= _MAX_NUMBER_TEXT and _DECIMAL_RE.fullmatch(text):
        value = float(text)  # correctly rounded
        if value in (float("inf"), float("-inf")):
            raise CellError(f"it is beyond the range of a double (±{_DOUBLE_MAX})")
        return value
    return text  # "NaN", "inf", "abc": the validator refuses them with the reason


def _collection(fd: FeatureDefinition) -> Converter:
    integral = fd.type is ScalarType.INTEGRAL
    example = '["a", "b"]' if fd.type is ScalarType.STRING else "[1, 2]"
    kind = fd.describe()

    def convert(text: str) -> Any:
        if not text.lstrip().startswith("["):
            raise CellError(f"a {kind} in a CSV cell is written as a JSON array, like {example}")
        value = loads_exact(text.encode("utf-8"), integral=integral)
        if not isinstance(value, list):
            raise CellError(f"a {kind} in a CSV cell is written as a JSON array, like {example}")
        return value
    return convert


def text_converter(fd: FeatureDefinition) -> Converter:
    """How a CSV cell of feature ``fd`` becomes its value (the cell is not empty)."""
    if fd.collection is not None:
        return _collection(fd)
    if fd.type is ScalarType.INTEGRAL:
        return _integral
    if fd.type is ScalarType.FRACTIONAL:
        return _fractional
    return str


# ---------------------------------------------------------------- JSON values

def _no_constant(name: str) -> Any:
    raise CellError(f"{name} is not valid JSON (write null for no value; NaN and infinity are not valid "
                    "values of any feature)")


def _slow_loads(raw: bytes) -> Any:
    """The stdlib parser, with every non-integer number as its exact Decimal."""
    try:
        text = raw.decode("utf-8").strip()
    except UnicodeDecodeError as exc:
        raise CellError(f"it is not valid UTF-8 (byte {raw[exc.start:exc.start + 1]!r} at byte "
                        f"{exc.start})") from None
    try:
        return json.loads(text, parse_float=Decimal, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise CellError(f"it is not valid JSON ({exc.msg} at character {exc.pos + 1})") from None
    except ValueError as exc:  # e.g. an integer of more than 4300 digits
        if isinstance(exc, CellError):
            raise
        raise CellError(f"it is not a value featurestream can read ({exc})") from None


def _has_float(value: Any) -> bool:
    if type(value) is float:
        return True
    return type(value) is list and any(type(x) is float for x in value)


def _exact_numbers(value: Any, integral: bool) -> Any:
    """Decimals from :func:`_slow_loads` -> values: kept for Integral (the validator takes whole
    Decimals exactly), correctly rounded doubles otherwise."""
    if isinstance(value, Decimal):
        if integral:
            if value.adjusted() > 18:  # checked before int(): 1e1000000000 would take gigabytes
                raise CellError(f"{value} does not fit in a signed 64-bit integer ({INT64_MIN}..{INT64_MAX})")
            return value
        try:
            out = float(value)
        except (InvalidOperation, ValueError):  # pragma: no cover - Decimal from JSON is finite
            raise CellError(f"{value} is not a number") from None
        if out in (float("inf"), float("-inf")):
            raise CellError(f"{value} is beyond the range of a double (±{_DOUBLE_MAX})")
        return out
    if type(value) is list:
        return [_exact_numbers(x, integral) for x in value]
    return value


def loads_exact(raw: bytes, *, integral: bool) -> Any:
    """One JSON value of a feature (``integral``: its scalar type is Integral), read exactly.

    orjson is correctly rounded and keeps integers up to 2^64 - 1 exact, but it reads an integer
    beyond that as a double and refuses numbers beyond the double range. So a value where an
    Integral holds a double, or that orjson refuses, is read again with Decimals.
    """
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return _exact_numbers(_slow_loads(raw), integral)
    if integral and _has_float(value):
        return _exact_numbers(_slow_loads(raw), integral)
    return value


class RecordReader:
    """JSON Lines: one line -> a record of the group, with every number read exactly."""

    def __init__(self, integral_features: frozenset[str], known: frozenset[str]) -> None:
        self._integral = integral_features
        self._known = known

    @classmethod
    def for_group(cls, group: FeatureGroup) -> RecordReader:
        return cls(integral_names(group.features), frozenset(group.feature_names))

    def loads(self, raw: bytes) -> Any:
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError:
            obj = self._slow(raw)
        else:
            if type(obj) is dict and any(_has_float(obj.get(n)) for n in self._integral):
                obj = self._slow(raw)
        if type(obj) is not dict:
            kind = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
                type(obj), "a number")
            raise CellError(f"it is {kind}, not a JSON object of feature name to value")
        return obj

    def _slow(self, raw: bytes) -> Any:
        obj = _slow_loads(raw)
        if type(obj) is not dict:
            return obj
        for name, value in obj.items():
            if name in self._known:
                try:
                    obj[name] = _exact_numbers(value, name in self._integral)
                except CellError as exc:
                    raise CellError(f"feature {name!r}: {exc}", name) from None
        return obj


def integral_names(features: tuple[FeatureDefinition, ...] | list[FeatureDefinition]) -> frozenset[str]:
    """Features whose values (or elements) are Integral."""
    return frozenset(f.name for f in features if f.type is ScalarType.INTEGRAL
                     and f.collection is not CollectionType.VECTOR)
