"""Event times: parse what users put (ISO-8601 text, epoch seconds, datetimes) into UTC nanoseconds.

Ordering in the online store compares these integers, so parsing is exact (no float rounding)
and unambiguous (a timestamp without a zone is rejected rather than guessed).
"""

from __future__ import annotations

import math
import re
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from schemas.errors import RecordValidationError

NS = 1_000_000_000
# Accepted range: 1970-01-01T00:00:00Z (inclusive) .. 2262-04-11T23:47:16.854775807Z (inclusive).
# The upper end is the last instant a signed 64-bit count of nanoseconds holds: the online store
# orders versions by that integer, the wire format carries it, and Arrow's timestamp[ns] ends
# there too. The door checks this same range, so no accepted record is refused by a worker.
MIN_NS = 0
MAX_NS = 2**63  # exclusive
MAX_TEXT = "2262-04-11T23:47:16.854775807Z"
# Longest plain decimal text of whole seconds worth parsing (int() of 10,000 digits would raise).
_MAX_WHOLE_DIGITS = 12

ACCEPTED_FORMATS = (
    "an ISO-8601 UTC timestamp like '2021-10-02T12:00:00Z' or '2021-10-02T12:00:00.123456789Z' "
    "(an explicit offset like '+02:00' is converted to UTC), or epoch seconds as a number "
    "like 1633176000 or 1633176000.123, from 1970-01-01T00:00:00Z to 2262-04-11T23:47:16.854775807Z"
)

_ISO_RE = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt ]([0-9]{2}):([0-9]{2}):([0-9]{2})"
    r"(?:\.([0-9]{1,9}))?"
    r"(?:([Zz])|([+-])([0-9]{2}):?([0-9]{2}))?"
)
_NUMERIC_RE = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_PAD = "000000000"


def _show(value: object) -> str:
    try:
        text = repr(value)
    except ValueError:  # an int past Python's 4,300-digit text limit
        return f"an integer of {value.bit_length()} bits"  # type: ignore[attr-defined]
    return text if len(text) <= 80 else f"{text[:80]}... ({len(text)} chars)"


def _fail(value: object, why: str, group: str | None, feature: str | None) -> RecordValidationError:
    where = ""
    if feature is not None:
        where = f" of feature {feature!r}"
    if group is not None:
        where += f" in feature group {group!r}"
    return RecordValidationError(f"invalid event time {_show(value)}{where}: {why}; expected {ACCEPTED_FORMATS}",
                                 group=group, feature=feature, value=value)


def _check_range(ns: int, value: object, group: str | None, feature: str | None) -> int:
    if ns < MIN_NS:
        raise _fail(value, "out of range: before 1970-01-01T00:00:00Z", group, feature)
    if ns >= MAX_NS:
        raise _fail(value, f"out of range: after {MAX_TEXT}, the last time a signed 64-bit count of "
                    "nanoseconds holds", group, feature)
    return ns


# Seconds since the epoch of "YYYY-MM-DDTHH:MM:" prefixes already parsed (UTC 'Z' texts only).
# Records of one batch share their minute, so this skips the regex and the calendar for most of
# them: the hot path of ingest parses one timestamp per record.
_PREFIX_SECONDS: dict[str, int] = {}
_PREFIX_CACHE_MAX = 65536


def iso_to_ns(text: str, *, group: str | None = None, feature: str | None = None) -> int:
    """Parse an ISO-8601 timestamp with a zone designator into UTC nanoseconds."""
    if text[-1:] == "Z" and len(text) >= 20:
        base = _PREFIX_SECONDS.get(text[:17])
        if base is not None:
            sec = text[17:19]
            rest = text[19:-1]
            if sec.isascii() and sec.isdigit() and sec < "60":
                # Range-checked here too: the minute of the last valid instant is cached like any.
                if not rest:
                    return _check_range((base + int(sec)) * NS, text, group, feature)
                frac = rest[1:]
                if rest[0] == "." and 0 < len(frac) <= 9 and frac.isascii() and frac.isdigit():
                    return _check_range((base + int(sec)) * NS + int((frac + _PAD)[:9]), text, group, feature)
    ns = _iso_to_ns_full(text, group, feature)
    if text[-1:] == "Z" and text[10:11] == "T" and text[16:17] == ":":
        if len(_PREFIX_SECONDS) >= _PREFIX_CACHE_MAX:
            _PREFIX_SECONDS.clear()
        _PREFIX_SECONDS[text[:17]] = ns // NS - int(text[17:19])
    return ns


def _iso_to_ns_full(text: str, group: str | None, feature: str | None) -> int:
    m = _ISO_RE.fullmatch(text)
    if m is None:
        raise _fail(text, "not an ISO-8601 timestamp with date, time to the second and zone", group, feature)
    y, mo, d, h, mi, s, frac, z, sign, oh, om = m.groups()
    if z is None and sign is None:
        raise _fail(text, "it has no time zone; add Z for UTC (e.g. '2021-10-02T12:00:00Z')", group, feature)
    hour, minute, second = int(h), int(mi), int(s)
    if hour > 23 or minute > 59 or second > 59:
        raise _fail(text, "hour, minute or second out of range (leap seconds are not accepted)", group, feature)
    try:
        days = date(int(y), int(mo), int(d)).toordinal() - _EPOCH_ORDINAL
    except ValueError as exc:
        raise _fail(text, f"not a calendar date ({exc})", group, feature) from None
    seconds = days * 86400 + hour * 3600 + minute * 60 + second
    if sign is not None:
        off_h, off_m = int(oh), int(om)
        if off_h > 23 or off_m > 59:
            raise _fail(text, "time zone offset out of range", group, feature)
        offset = off_h * 3600 + off_m * 60
        seconds = seconds - offset if sign == "+" else seconds + offset
    ns = seconds * NS
    if frac:
        ns += int((frac + _PAD)[:9])
    return _check_range(ns, text, group, feature)


def seconds_to_ns(value: Any, *, group: str | None = None, feature: str | None = None) -> int:
    """Epoch seconds (int, float, numeric text, Decimal) to nanoseconds, exactly.

    A float goes through its shortest repr, so 1633176000.123 is 1633176000123000000 and not
    the 1633176000122999906 that ``value * 1e9`` gives.
    """
    t = type(value)
    if t is int:
        return _check_range(value * NS, value, group, feature)
    if t is bool:
        raise _fail(value, "a boolean is not a time", group, feature)
    if t is float:
        if not math.isfinite(value):
            raise _fail(value, "not a finite number", group, feature)
        text = repr(value)
    elif t is str:
        if _NUMERIC_RE.fullmatch(value) is None:
            raise _fail(value, "not a number of seconds", group, feature)
        text = value
    elif isinstance(value, Decimal):
        if not value.is_finite():
            raise _fail(value, "not a finite number", group, feature)
        text = str(value)
    else:
        raise _fail(value, f"unsupported type {t.__name__}", group, feature)
    if "e" not in text and "E" not in text:
        # Fast exact path for plain decimal text.
        whole, _, frac = text.partition(".")
        negative = whole.startswith("-")
        if negative or whole.startswith("+"):
            whole = whole[1:]
        if not whole and not frac:
            raise _fail(value, "not a number of seconds", group, feature)
        if len(whole.lstrip("0")) > _MAX_WHOLE_DIGITS:
            return _check_range(MAX_NS * (-1 if negative else 1), value, group, feature)
        ns = int(whole or "0") * NS + int((frac + _PAD)[:9])
        if len(frac) > 9 and int(frac[9]) >= 5:  # round half up beyond nanoseconds
            ns += 1
        return _check_range(-ns if negative else ns, value, group, feature)
    try:
        ns_dec = Decimal(text).scaleb(9)
    except InvalidOperation:
        raise _fail(value, "not a number of seconds", group, feature) from None
    if not ns_dec.is_finite() or abs(ns_dec) >= MAX_NS * 10:
        raise _fail(value, "out of range", group, feature)
    return _check_range(int(ns_dec.to_integral_value()), value, group, feature)


def datetime_to_ns(value: Any, *, group: str | None = None, feature: str | None = None) -> int:
    """A timezone-aware datetime / pandas Timestamp, or numpy datetime64 (UTC), to nanoseconds."""
    if isinstance(value, datetime):
        if value != value:  # pandas NaT is a datetime that is not equal to itself
            raise _fail(value, "a missing time (NaT)", group, feature)
        if value.tzinfo is None or value.utcoffset() is None:
            raise _fail(value, "a naive datetime has no time zone; attach one, e.g. "
                        "datetime(..., tzinfo=timezone.utc) or Timestamp.tz_localize('UTC')", group, feature)
        ns_attr = getattr(value, "value", None)  # pandas Timestamp: exact ns since epoch, UTC
        if type(ns_attr) is int and hasattr(value, "nanosecond"):
            return _check_range(ns_attr, value, group, feature)
        delta = value - _EPOCH
        ns = (delta.days * 86400 + delta.seconds) * NS + delta.microseconds * 1000
        return _check_range(ns, value, group, feature)
    if type(value).__name__ == "datetime64":
        import numpy as np  # only reached with numpy values, so numpy is already imported

        if np.isnat(value):
            raise _fail(value, "a missing time (NaT)", group, feature)
        # Whole seconds and the sub-second rest separately: datetime64[ns] itself ends in 2262.
        whole = value.astype("datetime64[s]")
        rest = int((value - whole).astype("timedelta64[ns]").astype(np.int64))
        ns = int(whole.astype(np.int64)) * NS + rest
        return _check_range(ns, value, group, feature)
    raise _fail(value, f"unsupported type {type(value).__name__}", group, feature)


def is_datetime_like(value: object) -> bool:
    return isinstance(value, datetime) or type(value).__name__ == "datetime64"


def parse_event_time(value: Any, *, group: str | None = None, feature: str | None = None) -> int:
    """Nanoseconds since the Unix epoch, UTC, of any accepted event-time value.

    Strings are ISO-8601 with a zone (or, if purely numeric, epoch seconds as sent over the
    AWS wire as ValueAsString); numbers are epoch seconds; datetimes must carry a zone.
    """
    t = type(value)
    if t is str:
        if value and (value[0].isdigit() and len(value) > 10 and value[4] == "-"):
            return iso_to_ns(value, group=group, feature=feature)
        if _NUMERIC_RE.fullmatch(value) is not None:
            return seconds_to_ns(value, group=group, feature=feature)
        return iso_to_ns(value, group=group, feature=feature)
    if t is int or t is float:
        return seconds_to_ns(value, group=group, feature=feature)
    if value is None:
        raise _fail(value, "missing", group, feature)
    if t is bool or isinstance(value, bool):
        raise _fail(value, "a boolean is not a time", group, feature)
    if is_datetime_like(value):
        return datetime_to_ns(value, group=group, feature=feature)
    if isinstance(value, date):
        raise _fail(value, "a date has no time of day; use a datetime with tzinfo", group, feature)
    if isinstance(value, str):
        return parse_event_time(str(value), group=group, feature=feature)
    if isinstance(value, Decimal):
        return seconds_to_ns(value, group=group, feature=feature)
    # numpy scalars: integer/float types behave as int/float
    kind = getattr(getattr(value, "dtype", None), "kind", None)
    if kind in ("i", "u") and getattr(value, "ndim", 1) == 0:
        return seconds_to_ns(int(value), group=group, feature=feature)
    if kind == "f" and getattr(value, "ndim", 1) == 0:
        return seconds_to_ns(float(value), group=group, feature=feature)
    if kind == "b":
        raise _fail(value, "a boolean is not a time", group, feature)
    raise _fail(value, f"unsupported type {t.__name__}", group, feature)


def format_iso(ns: int) -> str:
    """ISO-8601 UTC text with ``Z`` and the shortest exact fraction, e.g. ``2021-10-02T12:00:00.123Z``."""
    seconds, frac = divmod(int(ns), NS)
    t = _EPOCH + timedelta(seconds=seconds)
    text = f"{t.year:04d}-{t.month:02d}-{t.day:02d}T{t.hour:02d}:{t.minute:02d}:{t.second:02d}"
    if frac:
        text += "." + f"{frac:09d}".rstrip("0")
    return text + "Z"


def ns_to_epoch_seconds(ns: int) -> int | float:
    """Epoch seconds as an int when whole, else a float (for Fractional event-time features)."""
    seconds, frac = divmod(int(ns), NS)
    return seconds if frac == 0 else float(Decimal(int(ns)).scaleb(-9))
