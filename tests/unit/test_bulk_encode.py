"""Differential: the bulk encoder of DataFrame and Arrow parts against the per-record path.

On random groups and random rows, good and bad mixed, ``streams.bulkencode.encode_part`` and
``streams.encoding.encode_rows`` (today's path, row by row) must give identical keys, values, headers,
row indexes, and identical rejections with identical reasons, for every input form.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.column_checks import iso_utc_to_ns
from schemas.eventtime import parse_event_time
from schemas.group import FeatureGroup
from schemas.names import MAX_MESSAGE_BYTES, MAX_RECORD_ID_BYTES, MAX_VALUE_BYTES
from schemas.types import CollectionType, FeatureDefinition, ScalarType
from schemas.validate import compile_validator
from streams.bulkencode import encode_part
from streams.encoding import encode_rows
from streams.rowsource import iter_parts, part_to_chunk
from tests.support.values import as_arrow, as_frame, groups, record

BAD_TIMES = ["2021-02-29T00:00:00Z", "2020-02-30T00:00:00Z", "1969-12-31T23:59:59Z", "2262-04-11T23:47:16.854775808Z",
             "2262-04-11T23:47:16.854775807Z", "2262-04-11T23:47:17Z", "2021-10-02T12:00:00", "2021-10-02T24:00:00Z",
             "2021-10-02T12:60:00Z", "2021-10-02T12:00:60Z", "2021-13-02T12:00:00Z", "2021-00-02T12:00:00Z",
             "2021-10-02T12:00:00+02:00", "2021-10-02t12:00:00z", "2021-10-02 12:00:00Z", "1633176000", "",
             "2021-10-02T12:00:00.1234567891Z", "2020-02-29T23:59:59.999999999Z", "9999-12-31T23:59:59Z", "x"]
BAD_SECONDS = [-1.0, math.inf, math.nan, 1e12, 9223372036.854775807, 9223372036.0, 0.0]
HUGE_TEXT = "x" * (MAX_VALUE_BYTES + 1)
# Under the value and record limits, over the message limit once JSON escapes each NUL as \u0000.
ESCAPED_HUGE = "\x00" * (MAX_MESSAGE_BYTES // 5)


def bad_value(fd: FeatureDefinition) -> st.SearchStrategy:
    """Values of the feature's Arrow type that the validator refuses (or takes only per record)."""
    if fd.collection is CollectionType.VECTOR:
        return st.one_of(st.lists(st.floats(-1e3, 1e3), min_size=fd.dimension + 1, max_size=fd.dimension + 1),
                         st.just([math.nan] * fd.dimension), st.just([None] * fd.dimension))
    if fd.collection is not None:
        element = {ScalarType.STRING: st.sampled_from(["a", "\x01", ESCAPED_HUGE[:9]]),
                   ScalarType.INTEGRAL: st.sampled_from([0, 1, -5]),
                   ScalarType.FRACTIONAL: st.sampled_from([0.0, -0.0, 1.5, math.inf])}[fd.type]
        return st.one_of(st.lists(element, min_size=2, max_size=3).map(lambda v: v + v[:1]),  # a duplicate
                         st.lists(st.one_of(st.none(), element), min_size=1, max_size=3))
    return {ScalarType.STRING: st.sampled_from([HUGE_TEXT, ESCAPED_HUGE, "\x1f\\\"", "\u2028\x7f"]),
            ScalarType.INTEGRAL: st.sampled_from([0]),
            ScalarType.FRACTIONAL: st.sampled_from([math.nan, math.inf, -math.inf, -0.0])}[fd.type]


@st.composite
def mixed_record(draw, group: FeatureGroup) -> dict:
    rec = draw(record(group))
    if draw(st.integers(0, 2)) == 0:  # about a third of the rows carry something bad
        fd = draw(st.sampled_from(group.features))
        if fd.name == group.record_identifier_name:
            bad = draw(st.sampled_from([None, "", "é" * (MAX_RECORD_ID_BYTES // 2 + 1), "\n\"x"])
                       if fd.type is ScalarType.STRING else st.sampled_from([None]))
        elif fd.name == group.event_time_name:
            bad = draw(st.sampled_from([None, *BAD_TIMES]) if fd.type is ScalarType.STRING
                       else st.sampled_from([None, *BAD_SECONDS]))
        else:
            bad = draw(bad_value(fd))
        rec[fd.name] = bad
    return rec


def per_record(validator, start, part, **options):
    return encode_rows(validator, part_to_chunk(start, part), **options)


def assert_same(bulk, ref) -> None:
    assert bulk.indexes == ref.indexes
    assert bulk.keys == ref.keys
    assert bulk.values == ref.values
    assert bulk.headers == ref.headers or not ref.keys
    assert bulk.rows == ref.rows
    assert [(r.index, r.reason, r.feature) for r in bulk.rejects] == \
           [(r.index, r.reason, r.feature) for r in ref.rejects]


OPTIONS = st.fixed_dictionaries({
    "target_stores": st.sampled_from([None, ["OnlineStore"], ["OfflineStore", "OnlineStore"], ["Nowhere"]]),
    "ttl_seconds": st.sampled_from([None, None, 60, -1]),
    "api_invocation_time_ns": st.sampled_from([0, 1_700_000_000_000_000_000]),
})


def forms(group, recs):
    yield "arrow", as_arrow(group, recs)
    yield "frame-nullable", as_frame(group, recs, "nullable")
    yield "frame-arrow", as_frame(group, recs, "arrow")
    yield "frame-numpy", pd.DataFrame(recs)  # object columns where types mix: converted or sent per record


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_bulk_and_per_record_paths_give_identical_messages_and_rejections(data):
    group = data.draw(groups())
    recs = data.draw(st.lists(mixed_record(group), min_size=1, max_size=8))
    options = data.draw(OPTIONS)
    chunk = data.draw(st.integers(1, 8))
    validator = compile_validator(group)
    errors = _Errors()
    logger = logging.getLogger("streams.bulkencode")
    logger.addHandler(errors)
    try:
        for _form, table in forms(group, recs):
            for start, part in iter_parts(table, chunk):
                assert_same(encode_part(validator, start, part, **options),
                            per_record(validator, start, part, **options))
    finally:
        logger.removeHandler(errors)
    assert errors.seen == []  # the encoders never disagreed (a part would silently go per record)


class _Errors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.seen: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.seen.append(record.getMessage())


def test_the_bulk_path_carries_the_good_rows_and_leaves_only_the_bad_ones(monkeypatch):
    """Not merely equal: most rows of a clean frame are encoded in bulk, not by the per-record path."""
    import streams.bulkencode as bulkencode

    feats = (FeatureDefinition("id", "String"), FeatureDefinition("et", "String"), FeatureDefinition("n", "Integral"),
             FeatureDefinition("x", "Fractional"), FeatureDefinition("tags", "String", "Set"),
             FeatureDefinition("v", "Fractional", "Vector", 2))
    group = FeatureGroup("g", "id", "et", feats)
    rows = [{"id": f"r{i}", "et": f"2021-10-02T12:00:{i % 60:02d}.5Z", "n": i, "x": i / 3, "tags": ["a", str(i)],
             "v": [0.5, float(i)]} for i in range(100)]
    rows[7]["x"] = math.inf
    rows[9]["tags"] = ["a", "a"]
    seen = []
    real = bulkencode.encode_rows

    def spy(validator, chunk, **kw):
        seen.append(len(chunk[2]))
        return real(validator, chunk, **kw)

    monkeypatch.setattr(bulkencode, "encode_rows", spy)
    out = encode_part(compile_validator(group), 0, pd.DataFrame(rows))
    assert seen == [1, 2]  # the reference row, then exactly the two bad rows
    assert [r.index for r in out.rejects] == [7, 9] and len(out.keys) == 98


def test_over_the_message_size_limit_is_rejected_with_the_doors_reason():
    group = FeatureGroup("g", "id", "et", (FeatureDefinition("id", "String"), FeatureDefinition("et", "String"),
                                           FeatureDefinition("s", "String")))
    et = "2021-10-02T12:00:00Z"
    table = pa.table({"id": ["a", "b", "c"], "et": [et] * 3, "s": ["ok", ESCAPED_HUGE, "ok"]})
    validator = compile_validator(group)
    bulk, ref = encode_part(validator, 0, table), per_record(validator, 0, table)
    assert_same(bulk, ref)
    assert [r.index for r in bulk.rejects] == [1] and "message size limit" in bulk.rejects[0].reason


@settings(max_examples=300, deadline=None)
@given(ns=st.integers(0, 2**63 - 1), frac=st.integers(0, 9))
def test_iso_parse_in_bulk_equals_the_per_record_parser(ns, frac):
    from schemas.eventtime import format_iso

    text = format_iso(ns)
    whole, _, rest = text[:-1].partition(".")
    text = whole + ("." + (rest + "000000000")[:frac] if frac else "") + "Z"
    got, ok = iso_utc_to_ns(pa.array([text, *BAD_TIMES]))
    assert ok[0] and int(got[0]) == parse_event_time(text)
    for t, good, value in zip(BAD_TIMES, ok[1:], got[1:], strict=True):
        if good:  # the strict form and in range: the same nanoseconds as the per-record parser
            assert int(value) == parse_event_time(t)
        else:
            try:
                parse_event_time(t)
            except ValueError:
                continue
            assert "Z" not in t or "T" not in t or t[-1] != "Z" or len(t) > 30  # a form left to the row path


@pytest.mark.parametrize("values", [[0.1, 1 / 3, 5e-324, -0.0, 1e16, 1.7976931348623157e308, 16393574076.896772],
                                    [x for x in np.random.default_rng(7).integers(0, 2**63, 5000).view(np.float64).tolist()
                                     if math.isfinite(x)]])
def test_float_text_is_orjsons_shortest_form(values):
    import orjson

    from schemas.column_json import json_floats

    assert json_floats(pa.array(values)).to_pylist() == [orjson.dumps(v).decode() for v in values]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_a_parquet_file_in_bulk_equals_its_rows_one_by_one(data):
    """Parquet ingest encodes its batches in bulk; rejections keep their row index (row = index + 1)."""
    import tempfile
    from pathlib import Path

    from streams.datafiles import FileRows
    from tests.support.values import write_parquet

    group = data.draw(groups())
    recs = data.draw(st.lists(mixed_record(group), min_size=1, max_size=10))
    chunk = data.draw(st.integers(1, 6))
    validator = compile_validator(group)
    with tempfile.TemporaryDirectory() as tmp:
        rows = FileRows(write_parquet(Path(tmp) / "in.parquet", group, recs), group)
        bulk = [encode_part(validator, start, part) for start, part in rows.iter_parts(chunk)]
        one_by_one = [encode_rows(validator, (start, (), part)) for start, part in
                      iter_parts(list(iter(rows)), chunk)]
    assert [b.rows for b in bulk] == [r.rows for r in one_by_one]
    for b, r in zip(bulk, one_by_one, strict=True):
        assert_same(b, r)
    assert all(rows.line_of(r.index) == r.index + 1 for b in bulk for r in b.rejects)
