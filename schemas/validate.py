"""Validation and coercion of records: the gate every put and delete passes before Kafka.

This is on the ingest hot path (>100k records/s with encoding, on 2 cores), so the rules are
compiled once per group into a flat plan, and the common case (a value already of the right
Python type) is checked inline without a function call; anything else takes a slow path
that coerces (AWS wire strings, numpy scalars, bools) or explains what is wrong.

Sizes: a value's size is the UTF-8 byte length of its text form (numbers as decimal text,
collections the sum of their elements), like the reference's ValueAsString; a record's size
is the sum of its values'. Numbers are first counted at their longest text (20/24 bytes), and
measured exactly only when that estimate crosses a limit, so the check is cheap and exact at
the boundary.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from schemas.errors import RecordValidationError
from schemas.eventtime import format_iso, ns_to_epoch_seconds, parse_event_time
from schemas.group import FeatureGroup
from schemas.messages import BOTH_STORES, HARD_DELETE, OFFLINE, ONLINE, SOFT_DELETE, DeleteMessage, PutMessage
from schemas.names import MAX_RECORD_BYTES, MAX_RECORD_ID_BYTES, MAX_VALUE_BYTES
from schemas.ttl import MAX_TTL_SECONDS
from schemas.types import INT64_MAX, INT64_MIN, CollectionType, FeatureDefinition, ScalarType

INT_TEXT_MAX = 20    # len("-9223372036854775808")
FLOAT_TEXT_MAX = 24  # len("-2.2250738585072014e-308")
# Plan codes: scalar kinds, then collection kinds (List/Set of a scalar, Vector).
_K_STR, _K_INT, _K_FLT, _K_CSTR, _K_CINT, _K_CFLT, _K_VEC = 0, 1, 2, 3, 4, 5, 6
_STR_SET, _INT_SET, _FLT_SET = frozenset({str}), frozenset({int}), frozenset({float})
_INT_RE = re.compile(r"[+-]?[0-9]+")
_MAX_INT_TEXT, _MAX_FLOAT_TEXT = 21, 400  # the longest texts coerce_integral / coerce_fractional parse
_FLOAT_RE = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_STORE_ORDER = (ONLINE, OFFLINE)
_DELETE_MODES = (SOFT_DELETE, HARD_DELETE)

_VALID = {
    ScalarType.STRING: "a str (numbers are not converted to text; pass '42' if you mean text)",
    ScalarType.INTEGRAL: (f"a signed 64-bit integer ({INT64_MIN}..{INT64_MAX}), its decimal text like "
                          "'42', a whole float like 42.0, or a bool (stored as 0/1)"),
    ScalarType.FRACTIONAL: "a finite number (int or float) or its decimal text like '0.75'",
}


class _Bad(Exception):
    """Internal: why a value is invalid; turned into RecordValidationError with context."""


def show(value: object, limit: int = 80) -> str:
    """repr of ``value``, truncated so a 300 KB value does not flood a log line."""
    text = repr(value)
    if len(text) > limit:
        text = f"{text[:limit]}... ({len(text)} chars)"
    return f"{text} ({type(value).__name__})"


def _is_missing(v: object) -> bool:
    """pandas.NA / NaT / None: a missing value (feature becomes null)."""
    return v is None or type(v).__name__ in ("NAType", "NaTType")


def _decimal_texts(v: list[Any]) -> list[float] | None:
    """The floats of a list of decimal texts that coerce_fractional takes as they are (no whitespace to
    strip), all finite; None for anything else (the slow path then coerces it or says why not)."""
    if not v or not set(map(type, v)) <= _STR_SET or max(map(len, v)) > _MAX_FLOAT_TEXT \
            or not all(map(_FLOAT_RE.fullmatch, v)):
        return None
    out = list(map(float, v))
    return out if sum(out) - sum(out) == 0.0 else None  # a finite sum proves every element finite


def _utf8_len(s: str) -> int:
    if s.isascii():
        return len(s)
    try:
        return len(s.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise _Bad(f"it is not valid Unicode text ({exc.reason} at position {exc.start})") from None


# ---------------------------------------------------------------- scalar coercion (slow path)

def coerce_integral(v: Any) -> int:
    t = type(v)
    if t is int:
        out = v
    elif t is bool:
        return int(v)
    elif t is float or isinstance(v, float):
        if not math.isfinite(v):
            raise _Bad("it is not a finite number")
        if not float(v).is_integer():
            raise _Bad("it is not a whole number")
        out = int(v)
    elif isinstance(v, str):
        s = v.strip()
        if len(s) > _MAX_INT_TEXT or _INT_RE.fullmatch(s) is None:
            if len(s) <= _MAX_INT_TEXT and _FLOAT_RE.fullmatch(s) is not None:
                raise _Bad("it is text of a non-integer number")
            if _INT_RE.fullmatch(s[:200]) is not None:
                raise _Bad("it does not fit in a signed 64-bit integer")
            raise _Bad("it is text that is not an integer")
        out = int(s)
    elif isinstance(v, int):  # int subclasses (IntEnum...)
        out = int(v)
    elif isinstance(v, Decimal):
        if not v.is_finite() or v != v.to_integral_value():
            raise _Bad("it is not a whole number")
        out = int(v)
    else:
        kind = getattr(getattr(v, "dtype", None), "kind", None)
        if kind in ("i", "u", "b") and getattr(v, "ndim", 1) == 0:
            out = int(v)
        elif kind == "f" and getattr(v, "ndim", 1) == 0:
            return coerce_integral(float(v))
        else:
            raise _Bad("it is not an integer")
    if not INT64_MIN <= out <= INT64_MAX:
        raise _Bad("it does not fit in a signed 64-bit integer")
    return out


def coerce_fractional(v: Any) -> float:
    t = type(v)
    if t is float:
        out = v
    elif t is int:
        try:
            out = float(v)
        except OverflowError:
            raise _Bad("it is too large for a double") from None
    elif t is bool or isinstance(v, bool):
        raise _Bad("a bool is not Fractional (declare the feature Integral for 0/1, or pass 0.0/1.0)")
    elif isinstance(v, str):
        s = v.strip()
        if len(s) > _MAX_FLOAT_TEXT or _FLOAT_RE.fullmatch(s) is None:
            raise _Bad("it is text that is not a decimal number")
        out = float(s)
    elif isinstance(v, (int, float, Decimal)):
        try:
            out = float(v)
        except OverflowError:
            raise _Bad("it is too large for a double") from None
    else:
        kind = getattr(getattr(v, "dtype", None), "kind", None)
        if kind == "b":
            raise _Bad("a bool is not Fractional (declare the feature Integral for 0/1, or pass 0.0/1.0)")
        if kind in ("i", "u", "f") and getattr(v, "ndim", 1) == 0:
            out = float(v)
        else:
            raise _Bad("it is not a number")
    if not math.isfinite(out):
        raise _Bad("NaN and infinity are not allowed" if out != out or v == v else "it is not finite")
    return out


def coerce_string(v: Any) -> str:
    if isinstance(v, str):
        return str(v)
    if isinstance(v, bytes):
        raise _Bad("bytes are not text; decode them to str first")
    raise _Bad("it is not text")


_SCALAR_COERCE = {
    ScalarType.STRING: coerce_string,
    ScalarType.INTEGRAL: coerce_integral,
    ScalarType.FRACTIONAL: coerce_fractional,
}


def _size(v: Any) -> int:
    """Exact size of a coerced value (see module docstring)."""
    t = type(v)
    if t is str:
        return _utf8_len(v)
    if t is int:
        return len(str(v))
    if t is float:
        return len(repr(v))
    if t is list:
        return sum(_size(x) for x in v)
    return len(str(v))


def _size_estimate(v: Any) -> int:
    """Upper bound of :func:`_size`, cheap (exact for text)."""
    t = type(v)
    if t is str:
        return _utf8_len(v)
    if t is int:
        return INT_TEXT_MAX
    if t is float:
        return FLOAT_TEXT_MAX
    if t is list:
        if v and type(v[0]) is not str:
            return FLOAT_TEXT_MAX * len(v)
        return sum(_size_estimate(x) for x in v)
    return len(str(v))


def coerce_collection(fd: FeatureDefinition, v: Any) -> list[Any]:
    coll = fd.collection
    if isinstance(v, (str, bytes, dict)) or isinstance(v, Mapping):
        raise _Bad(f"a {coll.value} must be a list of values, not {type(v).__name__}")
    is_set_input = isinstance(v, (set, frozenset))
    if isinstance(v, (list, tuple)) or (is_set_input and coll is CollectionType.SET):
        items = list(v)
    elif is_set_input:
        raise _Bad(f"a Python set has no order; pass a list for a {coll.value}")
    elif hasattr(v, "tolist") and getattr(v, "ndim", None) == 1:
        items = v.tolist()  # numpy array / pandas Series / Arrow array
    else:
        raise _Bad(f"a {coll.value} must be a list or tuple (or 1-d numpy array)")
    if coll is CollectionType.VECTOR and len(items) != fd.dimension:
        raise _Bad(f"it has {len(items)} elements; this Vector has dimension {fd.dimension}")
    coerce = _SCALAR_COERCE[fd.type]
    out = []
    for i, x in enumerate(items):
        if _is_missing(x) or (type(x) is float and x != x and fd.type is not ScalarType.FRACTIONAL):
            raise _Bad(f"element {i} is missing; collection elements cannot be null")
        try:
            out.append(coerce(x))
        except _Bad as exc:
            raise _Bad(f"element {i} {show(x)} is invalid: {exc}") from None
    if coll is CollectionType.SET:
        if len(set(out)) != len(out):
            seen: set[Any] = set()
            dup = next(x for x in out if x in seen or seen.add(x))  # type: ignore[func-returns-value]
            raise _Bad(f"it contains {dup!r} more than once; a Set has no duplicates")
        if is_set_input:
            out.sort()  # a set has no order; sorting keeps the output deterministic
    return out


# ---------------------------------------------------------------- the compiled validator

class RecordValidator:
    """Validation plan of one group version; build with :func:`compile_validator`."""

    __slots__ = ("group", "_names", "_order", "_plain", "_rid", "_rid_integral", "_et", "_et_string",
                 "_default_stores", "_enabled", "_version", "_defs")

    def __init__(self, group: FeatureGroup) -> None:
        if group.is_aggregation:
            # Its features are computed from its source's events: every door refuses writes here.
            raise RecordValidationError(
                f"feature group {group.name!r} is an aggregation group over {group.aggregation.source!r}: it is "
                f"read-only (its features are computed from the events of {group.aggregation.source!r}; write "
                "those instead)", group=group.name, value=group.name)
        self.group = group
        self._names = frozenset(group.feature_names)
        self._order = group.feature_names
        self._rid = group.record_identifier_name
        self._rid_integral = group.record_identifier.type is ScalarType.INTEGRAL
        self._et = group.event_time_name
        self._et_string = group.event_time.type is ScalarType.STRING
        self._enabled = group.enabled_stores
        self._default_stores = BOTH_STORES if self._enabled == BOTH_STORES else self._enabled
        self._version = group.version
        self._defs = {f.name: f for f in group.features}
        plain = []
        for f in group.features:
            if f.name in (self._rid, self._et):
                continue
            if f.collection is CollectionType.VECTOR:
                kind, extra = _K_VEC, f.dimension
            else:
                kind = {ScalarType.STRING: _K_STR, ScalarType.INTEGRAL: _K_INT,
                        ScalarType.FRACTIONAL: _K_FLT}[f.type]
                if f.collection is not None:
                    kind += 3  # the matching collection code
                extra = f.collection is CollectionType.SET
            plain.append((f.name, kind, f, extra))
        self._plain = tuple(plain)

    # errors -----------------------------------------------------------
    def _error(self, fd: FeatureDefinition | None, value: object, why: str, valid: str | None = None,
               feature: str | None = None) -> RecordValidationError:
        name = fd.name if fd is not None else feature
        where = f"feature group {self.group.name!r}"
        if name is not None:
            where += f", feature {name!r}" + (f" ({fd.describe()})" if fd is not None else "")
        if valid is None and fd is not None:
            valid = _VALID[fd.type] if fd.collection is None else _collection_valid(fd)
        msg = f"{where}: value {show(value)} is invalid: {why}"
        if valid:
            msg += f"; valid: {valid}"
        return RecordValidationError(msg, group=self.group.name, feature=name, value=value)

    def _slow_value(self, fd: FeatureDefinition, v: Any) -> tuple[Any, int]:
        """Coerce one non-null value of any type; returns (value, size estimate)."""
        if _is_missing(v):
            return None, 0
        try:
            if fd.collection is not None:
                out = coerce_collection(fd, v)
                size = _size_estimate(out)
                if size > MAX_VALUE_BYTES:
                    size = _size(out)
            else:
                out = _SCALAR_COERCE[fd.type](v)
                size = _size_estimate(out)
        except _Bad as exc:
            raise self._error(fd, v, str(exc)) from None
        if size > MAX_VALUE_BYTES:
            raise self._error(fd, v, f"it is {size} bytes; a value is at most {MAX_VALUE_BYTES} "
                              "bytes (UTF-8 text form)", valid="")
        return out, size

    # identifier and event time ---------------------------------------
    def record_id(self, v: Any) -> tuple[Any, str]:
        """(value to store, id text) of a record identifier value."""
        fd = self._defs[self._rid]
        if v is None or _is_missing(v):
            raise self._error(fd, v, "the record identifier is missing",
                              valid=f"every record needs its identifier feature {self._rid!r}")
        if self._rid_integral:
            if type(v) is int and INT64_MIN <= v <= INT64_MAX:
                return v, str(v)
            try:
                out = coerce_integral(v)
            except _Bad as exc:
                raise self._error(fd, v, str(exc)) from None
            return out, str(out)
        if type(v) is not str:
            try:
                v = coerce_string(v)
            except _Bad as exc:
                raise self._error(fd, v, str(exc)) from None
        if not v:
            raise self._error(fd, v, "the record identifier is empty", valid="a non-empty str")
        if len(v) * 4 > MAX_RECORD_ID_BYTES:
            try:
                n = _utf8_len(v)
            except _Bad as exc:
                raise self._error(fd, v, str(exc)) from None
            if n > MAX_RECORD_ID_BYTES:
                raise self._error(fd, v, f"it is {n} bytes",
                                  valid=f"a record identifier of at most {MAX_RECORD_ID_BYTES} bytes of UTF-8")
        elif not v.isascii():
            try:
                _utf8_len(v)
            except _Bad as exc:
                raise self._error(fd, v, str(exc)) from None
        return v, v

    def event_time(self, v: Any) -> tuple[Any, int]:
        """(value to store, nanoseconds) of an event-time value.

        str/int/float are stored exactly as given; other accepted types (datetime, numpy) are
        stored as ISO text (String feature) or epoch seconds (Fractional feature) so the record
        stays JSON.
        """
        fd = self._defs[self._et]
        if v is None or _is_missing(v):
            raise self._error(fd, v, "the event time is missing",
                              valid=f"every record needs its event time feature {self._et!r}")
        # parse_event_time's error already names the group, the feature and the formats.
        ns = parse_event_time(v, group=self.group.name, feature=self._et)
        t = type(v)
        if t is not str and t is not int and t is not float:
            v = format_iso(ns) if self._et_string else ns_to_epoch_seconds(ns)
        return v, ns

    # the hot path ------------------------------------------------------
    def validate(self, record: Mapping[str, Any], *, target_stores: Any = None, ttl_seconds: Any = None,
                 api_invocation_time_ns: int = 0) -> PutMessage:
        """Check and coerce one record; returns the PutMessage to publish."""
        if type(record) is not dict and not isinstance(record, Mapping):
            raise RecordValidationError(
                f"feature group {self.group.name!r}: a record must be a mapping of feature name to "
                f"value; got {show(record)}", group=self.group.name, value=record)
        names = self._names
        if not record.keys() <= names:
            self._unknown(record)
        get = record.get
        rid_value, rid = self.record_id(get(self._rid))
        et_value, et_ns = self.event_time(get(self._et))
        out = dict.fromkeys(self._order)
        out[self._rid] = rid_value
        out[self._et] = et_value
        size = len(rid) + FLOAT_TEXT_MAX + (len(et_value) if type(et_value) is str else 0)
        for name, kind, fd, extra in self._plain:
            v = get(name)
            if v is None:
                continue
            t = type(v)
            # Fast paths: the value already has the canonical Python type. Anything else, and
            # anything that fails here, goes to _slow_value, which coerces or explains.
            if kind == _K_STR:
                if t is str:
                    n = len(v) if v.isascii() else self._str_len(fd, v)
                    if n > MAX_VALUE_BYTES:
                        raise self._error(fd, v, f"it is {n} bytes of UTF-8",
                                          valid=f"text of at most {MAX_VALUE_BYTES} bytes")
                    size += n
                    out[name] = v
                    continue
            elif kind == _K_FLT:
                if t is float:
                    if v - v != 0.0:  # NaN or +-inf
                        raise self._error(fd, v, "NaN and infinity are not allowed")
                    size += FLOAT_TEXT_MAX
                    out[name] = v
                    continue
                # Decimal text (every number of an HTTP put arrives so): what coerce_fractional accepts
                # without stripping anything; a text that fails here takes the slow path and its reason.
                if t is str and len(v) <= _MAX_FLOAT_TEXT and _FLOAT_RE.fullmatch(v) is not None:
                    f = float(v)
                    if f - f == 0.0:
                        size += FLOAT_TEXT_MAX
                        out[name] = f
                        continue
            elif kind == _K_INT:
                if t is int and INT64_MIN <= v <= INT64_MAX:
                    size += INT_TEXT_MAX
                    out[name] = v
                    continue
                if t is str and len(v) <= _MAX_INT_TEXT and _INT_RE.fullmatch(v) is not None:
                    i = int(v)
                    if INT64_MIN <= i <= INT64_MAX:
                        size += INT_TEXT_MAX
                        out[name] = i
                        continue
            elif t is list:
                # set(map(type, v)) runs in C: one pass proves every element's type.
                if kind == _K_VEC:
                    if len(v) == extra and set(map(type, v)) <= _FLT_SET and sum(v) - sum(v) == 0.0:
                        # a finite sum proves every element finite (NaN/inf would propagate)
                        size += FLOAT_TEXT_MAX * extra
                        out[name] = v[:]
                        continue
                    floats = _decimal_texts(v)  # a Vector as an HTTP put sends it: decimal texts
                    if floats is not None and len(floats) == extra:
                        size += FLOAT_TEXT_MAX * extra
                        out[name] = floats
                        continue
                elif kind == _K_CSTR:
                    if set(map(type, v)) <= _STR_SET and all(map(str.isascii, v)) and \
                            (not extra or len(set(v)) == len(v)):
                        n = sum(map(len, v))
                        if n <= MAX_VALUE_BYTES:
                            size += n
                            out[name] = v[:]
                            continue
                elif kind == _K_CFLT:
                    if set(map(type, v)) <= _FLT_SET and sum(v) - sum(v) == 0.0 and \
                            (not extra or len(set(v)) == len(v)) and len(v) * FLOAT_TEXT_MAX <= MAX_VALUE_BYTES:
                        size += FLOAT_TEXT_MAX * len(v)
                        out[name] = v[:]
                        continue
                elif kind == _K_CINT:
                    if v and set(map(type, v)) <= _INT_SET and INT64_MIN <= min(v) and max(v) <= INT64_MAX \
                            and (not extra or len(set(v)) == len(v)) and len(v) * INT_TEXT_MAX <= MAX_VALUE_BYTES:
                        size += INT_TEXT_MAX * len(v)
                        out[name] = v[:]
                        continue
            v, n = self._slow_value(fd, v)
            size += n
            out[name] = v
        if size > MAX_RECORD_BYTES:
            exact = sum(_size(x) for x in out.values() if x is not None)
            if exact > MAX_RECORD_BYTES:
                raise RecordValidationError(
                    f"feature group {self.group.name!r}: record {show(rid, 60)} is {exact} bytes; a record "
                    f"is at most {MAX_RECORD_BYTES} bytes (sum of its values' UTF-8 text)",
                    group=self.group.name, value=rid)
        if target_stores is None:
            stores = self._default_stores
        else:
            stores = self.target_stores(target_stores)
        if ttl_seconds is not None:
            self._check_ttl(ttl_seconds)
        if type(api_invocation_time_ns) is not int or api_invocation_time_ns < 0:
            raise RecordValidationError(
                f"feature group {self.group.name!r}: api_invocation_time_ns must be a non-negative int; "
                f"got {show(api_invocation_time_ns)}", group=self.group.name, value=api_invocation_time_ns)
        return PutMessage(rid, et_ns, out, stores, ttl_seconds, self._version, api_invocation_time_ns)

    # helpers ---------------------------------------------------------
    def _str_len(self, fd: FeatureDefinition, v: str) -> int:
        try:
            return _utf8_len(v)
        except _Bad as exc:
            raise self._error(fd, v, str(exc)) from None

    def _unknown(self, record: Mapping[str, Any]) -> None:
        bad = [k for k in record if k not in self._names]
        shown = ", ".join(repr(k) for k in bad[:10]) + (f" and {len(bad) - 10} more" if len(bad) > 10 else "")
        valid = ", ".join(self._order[:30]) + (" ..." if len(self._order) > 30 else "")
        raise RecordValidationError(
            f"feature group {self.group.name!r} has no feature {shown}; its features are {valid} "
            "(add features with `featurestream group update --add-feature`)",
            group=self.group.name, feature=bad[0] if isinstance(bad[0], str) else None,
            value=record[bad[0]])

    def target_stores(self, target_stores: Any, *, enforce_enabled: bool = True) -> frozenset[str]:
        """Validate a TargetStores value (any iterable of store names)."""
        group = self.group.name
        if isinstance(target_stores, (str, bytes)) or not hasattr(target_stores, "__iter__"):
            raise RecordValidationError(
                f"feature group {group!r}: target_stores {show(target_stores)} must be a list of "
                f"{ONLINE!r} and/or {OFFLINE!r}", group=group, value=target_stores)
        stores = frozenset(target_stores)
        if not stores or not stores <= BOTH_STORES:
            raise RecordValidationError(
                f"feature group {group!r}: target_stores {show(target_stores)} is invalid; valid: a "
                f"non-empty list of {ONLINE!r} and/or {OFFLINE!r}", group=group, value=target_stores)
        if enforce_enabled and not stores <= self._enabled:
            off = ", ".join(sorted(stores - self._enabled))
            raise RecordValidationError(
                f"feature group {group!r}: target store {off} is not enabled for this group; enabled: "
                f"{', '.join(s for s in _STORE_ORDER if s in self._enabled)}", group=group,
                value=target_stores)
        return BOTH_STORES if stores == BOTH_STORES else stores

    def _check_ttl(self, ttl_seconds: Any) -> None:
        if type(ttl_seconds) is not int or not 0 < ttl_seconds <= MAX_TTL_SECONDS:
            raise RecordValidationError(
                f"feature group {self.group.name!r}: ttl_seconds {show(ttl_seconds)} is invalid; valid: "
                f"None (the group's TTL) or an integer from 1 to {MAX_TTL_SECONDS}",
                group=self.group.name, value=ttl_seconds)


def _collection_valid(fd: FeatureDefinition) -> str:
    scalar = _VALID[fd.type]
    if fd.collection is CollectionType.VECTOR:
        return f"a list of exactly {fd.dimension} finite numbers"
    extra = " without duplicates (a set/frozenset is also accepted)" if fd.collection is CollectionType.SET else ""
    return f"a list or tuple{extra} whose elements are each {scalar}; elements cannot be null"


# ---------------------------------------------------------------- entry points

def compile_validator(group: FeatureGroup) -> RecordValidator:
    """The validator of ``group``, built once and kept on the (immutable) group object."""
    v = group.__dict__.get("_validator")
    if v is None:
        v = RecordValidator(group)
        object.__setattr__(group, "_validator", v)
    return v


def validate_record(group: FeatureGroup, record: Mapping[str, Any], **kw: Any) -> PutMessage:
    """Convenience: ``compile_validator(group).validate(record, **kw)``."""
    return compile_validator(group).validate(record, **kw)


def validate_delete(group: FeatureGroup, record_id: Any, event_time: Any, *, mode: str = SOFT_DELETE,
                    target_stores: Any = None, api_invocation_time_ns: int = 0) -> DeleteMessage:
    """Check a DeleteRecord request; returns the DeleteMessage to publish."""
    v = compile_validator(group)
    _, rid = v.record_id(record_id)
    et_value, ns = v.event_time(event_time)
    if mode not in _DELETE_MODES:
        raise RecordValidationError(
            f"feature group {group.name!r}: delete mode {show(mode)} is invalid; valid: "
            f"{SOFT_DELETE!r} (default) or {HARD_DELETE!r}", group=group.name, value=mode)
    stores = v._default_stores if target_stores is None else v.target_stores(target_stores)
    if type(api_invocation_time_ns) is not int or api_invocation_time_ns < 0:
        raise RecordValidationError(
            f"feature group {group.name!r}: api_invocation_time_ns must be a non-negative int; got "
            f"{show(api_invocation_time_ns)}", group=group.name, value=api_invocation_time_ns)
    return DeleteMessage(rid, ns, et_value, mode, stores, group.version, api_invocation_time_ns)
