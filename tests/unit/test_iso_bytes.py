"""The byte-level ISO-8601 reader (``schemas.column_checks.iso_utc_to_ns``) against the per-record parser.

It proves a value only when the value has the strict form (``ISO_UTC_Z``, matched here by Python's
``re``) and the per-record parser (``schemas.eventtime``) gives the same nanoseconds, inside int64's
range from 1970. Values are generated near the form on purpose: valid texts with one byte changed,
dropped or added, non-ASCII characters, nulls, and arrays that are slices of bigger ones.
"""

from __future__ import annotations

import re

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.batch import iso_ns
from schemas.column_checks import ISO_UTC_Z, iso_utc_to_ns
from schemas.eventtime import format_iso, parse_event_time

_FORM = re.compile(ISO_UTC_Z.removeprefix("^").removesuffix("$"))
_NOISE = list("0123456789-:.TZzt+ \n\x00é") + ["\u0663", "٣", "😀"]


def expected(text: str | None) -> int | None:
    """What the reader must give: the parser's nanoseconds for a value of the strict form in range, else None."""
    if text is None or _FORM.fullmatch(text) is None:
        return None
    try:
        ns = parse_event_time(text)
    except ValueError:
        return None
    return ns if 0 <= ns < 2**63 else None


@st.composite
def near_iso(draw: st.DrawFn) -> str | None:
    if draw(st.integers(0, 9)) == 0:
        return None
    ns = draw(st.one_of(st.integers(0, 2**63 - 1), st.integers(2**63 - 10**9, 2**63 - 1),
                        st.integers(-10**18, 10**19)))
    digits = draw(st.integers(0, 10))
    try:
        text = format_iso(ns)
    except (ValueError, OverflowError):
        text = "2262-04-11T23:47:16.854775808Z" if ns > 0 else "1969-12-31T23:59:59.999999999Z"
    whole, _, rest = text[:-1].partition(".")
    text = whole + ("." + (rest + "0000000000")[:digits] if digits else "") + "Z"
    for _ in range(draw(st.integers(0, 2))):
        where = draw(st.integers(0, len(text)))
        how = draw(st.sampled_from(["replace", "drop", "add"]))
        char = draw(st.sampled_from(_NOISE))
        if how == "replace" and where < len(text):
            text = text[:where] + char + text[where + 1:]
        elif how == "drop":
            text = text[:where] + text[where + 1:]
        else:
            text = text[:where] + char + text[where:]
    return text


@settings(max_examples=400, deadline=None)
@given(texts=st.lists(near_iso(), min_size=0, max_size=40), large=st.booleans(), cut=st.integers(0, 5))
def test_the_byte_reader_proves_exactly_what_the_parser_accepts_in_the_strict_form(
        texts: list[str | None], large: bool, cut: int) -> None:
    padded = ["1999-01-01T00:00:00Z"] * cut + texts + ["2000-02-29T12:00:00.5Z"] * cut
    arr = pa.array(padded, pa.large_string() if large else pa.string()).slice(cut, len(texts))
    ns, ok = iso_utc_to_ns(arr)
    assert len(ns) == len(ok) == len(texts)
    for text, good, value in zip(texts, ok.tolist(), ns.tolist(), strict=True):
        want = expected(text)
        assert good == (want is not None), text
        if good:
            assert value == want, text
    proven, same = iso_ns(arr)  # the batch decode reads event times with the same reader
    assert proven.tolist() == ok.tolist() and same.tolist() == ns.tolist()


def test_the_edges_of_the_form_and_the_range() -> None:
    texts = ["1970-01-01T00:00:00Z", "2262-04-11T23:47:16.854775807Z", "2262-04-11T23:47:16.854775808Z",
             "1969-12-31T23:59:59.999999999Z", "2024-02-29T00:00:00Z", "2023-02-29T00:00:00Z",
             "2024-12-31T23:59:59.123456789Z", "2024-12-31T23:59:59.1234567891Z", "2024-12-31T23:59:59.Z",
             "2024-12-31T24:00:00Z", "2024-13-01T00:00:00Z", "2024-00-10T00:00:00Z", "2024-01-00T00:00:00Z",
             "2024-01-01t00:00:00Z", "2024-01-01T00:00:00z", "2024-01-01T00:00:00+00:00", "", None,
             "2024-01-01T00:00:60Z", "0000-01-01T00:00:00Z", "9999-12-31T23:59:59Z", "2024-01-01T00:00:00.0Z"]
    ns, ok = iso_utc_to_ns(pa.array(texts))
    assert ok.tolist() == [expected(t) is not None for t in texts]
    assert ok.tolist()[:7] == [True, True, False, False, True, False, True]
    assert int(ns[1]) == 2**63 - 1 and int(ns[6]) == parse_event_time(texts[6])


def test_an_empty_or_all_null_column() -> None:
    for arr in (pa.array([], pa.string()), pa.array([None, None], pa.string()), pa.nulls(3)):
        ns, ok = iso_utc_to_ns(arr)
        assert not ok.any() and len(ns) == len(arr)
