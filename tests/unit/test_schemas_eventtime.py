from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal

import numpy as np
import pandas as pd
import pytest

from schemas.errors import RecordValidationError
from schemas.eventtime import format_iso, iso_to_ns, parse_event_time

T0 = 1633176000 * 10**9  # 2021-10-02T12:00:00Z


@pytest.mark.parametrize("value,ns", [
    ("2021-10-02T12:00:00Z", T0),
    ("2021-10-02T12:00:00.123Z", T0 + 123_000_000),
    ("2021-10-02T12:00:00.123456789Z", T0 + 123_456_789),
    ("2021-10-02T12:00:00.1Z", T0 + 100_000_000),
    ("2021-10-02T12:00:00+00:00", T0),
    ("2021-10-02T14:00:00+02:00", T0),
    ("2021-10-02T07:30:00-0430", T0),
    ("2021-10-02t12:00:00z", T0),
    ("1970-01-01T00:00:00Z", 0),
    ("2262-04-11T23:47:16.854775807Z", 2**63 - 1),  # the last instant int64 nanoseconds hold
    ("9223372036.854775807", 2**63 - 1),
    (1633176000, T0),
    (1633176000.123, T0 + 123_000_000),  # exact, not float * 1e9 noise
    (1633176000.5, T0 + 500_000_000),
    ("1633176000.123", T0 + 123_000_000),  # AWS wire: ValueAsString
    ("1.633176e9", T0),
    (Decimal("1633176000.000000001"), T0 + 1),
    (np.int64(1633176000), T0),
    (np.float64(1633176000.25), T0 + 250_000_000),
    (np.datetime64("2021-10-02T12:00:00.123456789", "ns"), T0 + 123_456_789),
    (np.datetime64("2021-10-02", "D"), T0 - 12 * 3600 * 10**9),
    (pd.Timestamp("2021-10-02T12:00:00.000000001Z"), T0 + 1),
    (pd.Timestamp("2021-10-02T14:00:00", tz="Europe/Berlin"), T0),
    (datetime(2021, 10, 2, 12, tzinfo=UTC), T0),
    (datetime(2021, 10, 2, 13, tzinfo=timezone(timedelta(hours=1))), T0),
])
def test_parse_event_time(value, ns):
    assert parse_event_time(value) == ns


def test_cached_and_uncached_parse_agree():
    # The prefix cache must not change results, also with a second lookup of the same minute.
    for text in ("2022-02-28T23:59:59.5Z", "2022-02-28T23:59:00Z", "2022-02-28T23:59:07.000000001Z"):
        assert iso_to_ns(text) == iso_to_ns(text)
    assert iso_to_ns("2022-02-28T23:59:07.000000001Z") - iso_to_ns("2022-02-28T23:59:00Z") == 7 * 10**9 + 1


@pytest.mark.parametrize("value,match", [
    ("2021-10-02T12:00:00", "add Z"),
    ("2021-10-02 12:00:00.5", "add Z"),
    ("2021-10-02", "not an ISO-8601"),
    ("2021-10-02T12:00Z", "not an ISO-8601"),
    ("2021-10-02T12:00:00.1234567891Z", "not an ISO-8601"),
    ("2021-13-02T12:00:00Z", "not a calendar date"),
    ("2021-02-29T12:00:00Z", "not a calendar date"),
    ("2021-10-02T24:00:00Z", "out of range"),
    ("2021-10-02T12:60:00Z", "out of range"),
    ("2021-10-02T12:00:60Z", "leap seconds"),
    ("2021-10-02T12:00:00+25:00", "offset out of range"),
    ("1969-12-31T23:59:59Z", "out of range"),
    ("1970-01-01T00:30:00+01:00", "out of range"),
    ("-001-01-01T00:00:00Z", "not an ISO-8601"),
    ("10000-01-01T00:00:00Z", "not an ISO-8601"),
    ("yesterday", "not an ISO-8601"),
    ("", "not an ISO-8601"),
    ("2021-10-02T12:00:0٣Z", "not an ISO-8601"),  # non-ASCII digit
    (float("nan"), "not a finite number"),
    (float("inf"), "not a finite number"),
    (float("-inf"), "not a finite number"),
    ("nan", "not an ISO-8601"),
    (True, "boolean"),
    (np.bool_(True), "boolean"),
    (-1, "out of range"),
    (-0.5, "out of range"),
    (253402300800, "out of range"),
    ("2262-04-11T23:47:16.854775808Z", "after 2262-04-11T23:47:16.854775807Z"),
    ("2500-01-01T00:00:00Z", "after 2262-04-11"),
    ("9999-12-31T23:59:59Z", "after 2262-04-11"),
    ("9223372036.854775808", "after 2262-04-11"),
    (9223372037, "after 2262-04-11"),
    ("1" * 10_000, "after 2262-04-11"),  # a 10,000-digit epoch: refused, not a crash
    ("-" + "1" * 10_000, "before 1970"),
    ("1" * 10_000 + ".5", "after 2262-04-11"),
    (10**30, "out of range"),
    (1e300, "out of range"),
    ("1e400", "out of range"),
    (None, "missing"),
    (datetime(2021, 10, 2, 12), "naive datetime"),
    (pd.Timestamp("2021-10-02T12:00:00"), "naive datetime"),
    (pd.NaT, "NaT"),
    (np.datetime64("NaT"), "NaT"),
    (np.datetime64("10000-01-01", "D"), "out of range"),
    (date(2021, 10, 2), "a date has no time"),
    ([1633176000], "unsupported type list"),
    (b"2021-10-02T12:00:00Z", "unsupported type bytes"),
])
def test_parse_event_time_rejects(value, match):
    with pytest.raises(RecordValidationError, match=match) as exc:
        parse_event_time(value, group="customers", feature="event_time")
    msg = str(exc.value)
    assert "'customers'" in msg and "'event_time'" in msg and "ISO-8601" in msg
    assert exc.value.group == "customers" and exc.value.feature == "event_time"


@pytest.mark.parametrize("ns,text", [
    (T0, "2021-10-02T12:00:00Z"),
    (T0 + 123_000_000, "2021-10-02T12:00:00.123Z"),
    (T0 + 1, "2021-10-02T12:00:00.000000001Z"),
    (0, "1970-01-01T00:00:00Z"),
])
def test_format_iso(ns, text):
    assert format_iso(ns) == text
    assert parse_event_time(text) == ns


def test_an_enormous_integer_epoch_is_refused_by_name():
    # repr() of an int past 4,300 digits raises ValueError: the message must not.
    with pytest.raises(RecordValidationError, match="an integer of 33220 bits.*after 2262-04-11"):
        parse_event_time(10**10_000, group="customers", feature="event_time")
