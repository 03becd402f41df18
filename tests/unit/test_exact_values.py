"""Exact values, unit level: random groups and edge values through every input form, then the
validated message, the wire, the online codec, the offline row and the HTTP wire, bit for bit."""

from __future__ import annotations

import tempfile
from pathlib import Path

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from featurestream.http.records import record_from_wire, record_to_wire
from schemas.eventtime import parse_event_time
from schemas.validate import compile_validator
from schemas.wire import decode
from sinks.offline.rows import rows_to_table
from sinks.online.codec import decode_record, encode_features
from streams.datafiles import FileRows
from streams.ingest import encode_chunk
from streams.rowsource import iter_chunks
from tests.support.values import (
    as_arrow,
    as_frame,
    assert_same_record,
    groups,
    records,
    write_csv,
    write_jsonl,
    write_parquet,
)

NOW = 4_200_000_000 * 10**9
FORMS = ("dicts", "frame-nullable", "frame-arrow", "arrow", "csv", "jsonl", "parquet")


def _input(form: str, group, recs, tmp: Path):
    if form == "dicts":
        return [dict(r) for r in recs]
    if form.startswith("frame-"):
        return as_frame(group, recs, form.removeprefix("frame-"))
    if form == "arrow":
        return as_arrow(group, recs)
    writer = {"csv": lambda p: write_csv(p, group, recs), "jsonl": lambda p: write_jsonl(p, recs),
              "parquet": lambda p: write_parquet(p, group, recs)}[form]
    return FileRows(writer(tmp / f"in.{form}"), group)


def _published(group, data):
    """What ingest publishes for ``data``: validated and encoded chunk by chunk, as its workers do."""
    validator = compile_validator(group)
    out = []
    for chunk in iter_chunks(data, chunk_size=2):
        encoded, rejected = encode_chunk(validator, chunk)
        assert rejected == [], [r.reason for r in rejected]
        out += encoded
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_every_input_form_reaches_every_output_bit_for_bit(data):
    group = data.draw(groups())
    recs = data.draw(records(group))
    et = group.event_time_name
    with tempfile.TemporaryDirectory() as tmp:
        for form in FORMS:
            encoded = _published(group, _input(form, group, recs, Path(tmp)))
            assert len(encoded) == len(recs), form
            for want, (key, value, headers) in zip(recs, encoded, strict=True):
                msg = decode(key, value, headers)
                assert_same_record(group, want, msg.record, f"{form} -> wire")
                assert msg.event_time_ns == parse_event_time(want[et])
                fields = encode_features(group, msg.id, msg.record)
                stored = {b"__et": str(msg.event_time_ns).encode()}
                stored |= {k.encode(): v.encode() for k, v in zip(fields[::2], fields[1::2], strict=True)}
                online, _ = decode_record(group, msg.id, stored, NOW)
                assert_same_record(group, want, online, f"{form} -> online store")
                (row,) = rows_to_table(group, [(msg, "t", 0, 0)], NOW).to_pylist()
                assert_same_record(group, want, row, f"{form} -> offline row", skip=(et,))
                # HTTP: GetRecord answers the online record as text; PutRecord reads that text back.
                wire = orjson.loads(orjson.dumps(record_to_wire(online)))
                again = compile_validator(group).validate(record_from_wire(group, wire))
                assert_same_record(group, want, again.record, f"{form} -> HTTP GetRecord -> PutRecord")
