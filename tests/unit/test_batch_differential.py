"""Differential: the batch path (schemas/batch.py + sinks/offline/columns.py) against the per-record
path (schemas.wire.decode + check_against_group + sinks/offline/rows.py), through the offline
applier, on random batches of good and bad messages. Same rows bit for bit, same dead letters,
same reasons, same offsets; no servers (a local SQLite catalog, nothing committed)."""

from __future__ import annotations

import math
import struct
import tempfile
from typing import Any

import orjson
import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.group import FeatureGroup
from schemas.types import FeatureDefinition
from schemas.validate import compile_validator, validate_delete
from schemas.wire import encode
from sinks.offline.catalog import OfflineTables
from sinks.offline.writer import OfflineWriter
from streams.group_view import GroupView
from streams.offline.applier import OfflineApplier
from streams.route import RawMessage

PREFIX = "fs"
WT = 1_800_000_000 * 10**9
_TABLES = OfflineTables.open(f"sqlite:///{tempfile.mkdtemp()}/catalog.db", PREFIX)


def _group(name: str, *, id_type: str = "String", et_type: str = "String", version_extra: bool = True) -> FeatureGroup:
    feats = [
        FeatureDefinition("rid", id_type), FeatureDefinition("et", et_type),
        FeatureDefinition("i", "Integral"), FeatureDefinition("f", "Fractional"), FeatureDefinition("s", "String"),
        FeatureDefinition("ls", "String", "List"), FeatureDefinition("si", "Integral", "Set"),
        FeatureDefinition("sf", "Fractional", "Set"), FeatureDefinition("lf", "Fractional", "List"),
        FeatureDefinition("v", "Fractional", "Vector", 3), FeatureDefinition("ss", "String", "Set"),
    ]
    g = FeatureGroup(name=name, record_identifier_name="rid", event_time_name="et", features=feats,
                     offline_uri=f"{tempfile.gettempdir()}/fs-diff/{name}")
    # version 2 adds a feature: messages of version 1 and 2 are valid, 3 is newer than the registry
    return g.with_added_features([FeatureDefinition("added", "Integral")]) if version_extra else g


GROUPS = {"a": _group("a"), "b": _group("b", id_type="Integral", et_type="Fractional")}

ints = st.one_of(st.integers(-(2**63), 2**63 - 1), st.sampled_from([0, -1, 2**63 - 1, -(2**63), 2**53 + 1]))
floats = st.floats(allow_nan=False, allow_infinity=False)
texts = st.text(max_size=12)
iso = st.builds(lambda s, f: f"2021-{s % 12 + 1:02d}-{s % 28 + 1:02d}T{s % 24:02d}:{s % 60:02d}:{s % 59:02d}{f}Z",
                st.integers(0, 10**6), st.sampled_from(["", ".5", ".123456789", ".000000001", ".1230"]))


@st.composite
def record(draw: Any, group: FeatureGroup) -> dict[str, Any]:
    rid: Any = draw(st.integers(-(2**63), 2**63 - 1)) if group.name == "b" else draw(st.text(min_size=1, max_size=8))
    et: Any = draw(st.one_of(st.integers(0, 4_000_000_000), floats.filter(lambda x: 0 <= x < 4e9))) \
        if group.name == "b" else draw(iso)
    rec = {"rid": rid, "et": et}
    for name, strat in (("i", ints), ("f", floats), ("s", texts), ("ls", st.lists(texts, max_size=3)),
                        ("si", st.lists(ints, max_size=3, unique=True)),
                        ("sf", st.lists(floats, max_size=3, unique_by=lambda x: x + 0.0)),
                        ("lf", st.lists(floats, max_size=3)), ("v", st.lists(floats, min_size=3, max_size=3)),
                        ("ss", st.lists(texts, max_size=3, unique=True)),
                        ("added", ints)):
        if draw(st.booleans()):
            rec[name] = draw(strat)
    return rec


MUTATIONS = ["none", "none", "none", "delete", "garbage", "string_for_int", "int_for_string", "nan", "infinity",
             "huge_int", "huge_float", "unknown_feature", "newer_version", "older_version", "bad_version",
             "no_headers", "key_mismatch", "online_only", "extra_field", "duplicate_key", "newline", "bad_utf8",
             "event_time_mismatch", "offset_iso", "set_duplicate", "null_element", "vector_dim", "float_for_int",
             "int_for_float", "bool", "empty", "tombstone", "delete_numeric_time", "delete_no_mode", "ttl",
             "bad_ttl", "log_append", "big_int_for_float", "two_objects", "negative_zero", "delete_id_text"]


def _message(draw: Any, group: FeatureGroup, offset: int) -> tuple[bytes | None, bytes | None, Any, bool, int]:
    v = compile_validator(group)
    mutation = draw(st.sampled_from(MUTATIONS))
    rec = draw(record(group))
    if mutation == "delete" or mutation.startswith("delete_"):
        msg: Any = validate_delete(group, rec["rid"], rec["et"], api_invocation_time_ns=offset)
    else:
        msg = v.validate(rec, api_invocation_time_ns=offset, ttl_seconds=draw(st.integers(1, 10**6))
                         if mutation == "ttl" else None)
    key, value, headers = encode(msg)
    obj = orjson.loads(value)
    log_append = mutation == "log_append"

    def dumps(o: Any) -> bytes:
        return orjson.dumps(o)

    r = obj.get("record")
    if mutation == "garbage":
        value = draw(st.binary(max_size=30))
    elif mutation == "string_for_int":
        r["i"] = "42"
        value = dumps(obj)
    elif mutation == "int_for_string":
        r["s"] = 42
        value = dumps(obj)
    elif mutation in ("nan", "infinity", "huge_int", "huge_float", "big_int_for_float", "negative_zero") \
            and r is not None:
        field, text = {"nan": ("f", b"NaN"), "infinity": ("f", b"-Infinity"), "huge_int": ("i", b"9223372036854775808"),
                       "huge_float": ("f", b"1e400"), "big_int_for_float": ("f", b"123456789012345678901234567890"),
                       "negative_zero": ("f", draw(st.sampled_from([b"-0", b"-0.0", b"0E400"])))}[mutation]
        r[field] = 1234567  # a marker, replaced in the text
        value = dumps(obj).replace(f'"{field}":1234567'.encode(), f'"{field}":'.encode() + text)
    elif mutation == "unknown_feature":
        r["nickname"] = draw(st.one_of(st.none(), texts))
        value = dumps(obj)
    elif mutation in ("newer_version", "older_version", "bad_version"):
        ver = {"newer_version": b"3", "older_version": b"1", "bad_version": draw(st.sampled_from(
            [b"0", b"x", b"-1", b"", b"99999999999999999999", b"\xff"]))}[mutation]
        headers = [(n, ver if n == "fs-schema-version" else h) for n, h in headers]
    elif mutation == "no_headers":
        headers = None
    elif mutation == "key_mismatch":
        key = b"other"
    elif mutation == "online_only":
        obj["target_stores"] = ["OnlineStore"]
        value = dumps(obj)
    elif mutation == "extra_field":
        obj["future"] = draw(st.one_of(st.none(), ints, texts))
        value = dumps(obj)
    elif mutation == "duplicate_key":
        value = value[:-1] + b',"op":"put"}'
    elif mutation == "newline":
        value = value.replace(b",", b",\n", 1)
    elif mutation == "bad_utf8":
        value = value.replace(b'"op"', b'"\xff":1,"op"', 1)
    elif mutation == "event_time_mismatch":
        obj["event_time_ns"] += 1
        value = dumps(obj)
    elif mutation == "offset_iso" and group.name == "a" and r is not None:
        r["et"] = r["et"][:-1] + "+00:00"
        value = dumps(obj)
    elif mutation == "set_duplicate" and r is not None:
        field, dup = draw(st.sampled_from([("sf", [0.0, -0.0]), ("sf", [2.5, 1.0, 2.5]), ("si", [7, 7]),
                                           ("ss", ["é", "x", "é"]), ("ss", ["a", "A"])]))
        r[field] = dup
        value = dumps(obj)
    elif mutation == "null_element" and r is not None:
        r["ls"] = ["a", None]
        value = dumps(obj)
    elif mutation == "vector_dim" and r is not None:
        r["v"] = [1.0, 2.0]
        value = dumps(obj)
    elif mutation == "float_for_int" and r is not None:
        r["i"] = 7.0
        value = dumps(obj)
    elif mutation == "int_for_float" and r is not None:
        r["f"] = draw(st.integers(-(2**63), 2**64 - 1))  # orjson writes up to 64 bits; beyond: big_int_for_float
        value = dumps(obj)
    elif mutation == "bool" and r is not None:
        r["i"] = True
        value = dumps(obj)
    elif mutation == "empty":
        value = draw(st.sampled_from([b"", b"  ", b"{}", b"[]", b"null"]))
    elif mutation == "tombstone":
        value = None
    elif mutation == "delete_numeric_time":
        obj["event_time"] = obj["event_time_ns"] // 10**9
        value = dumps(obj)
    elif mutation == "delete_id_text":
        obj["id"] = draw(st.sampled_from(["007", "+7", "-0", " 7", "7", "-9223372036854775808", "9223372036854775808"]))
        key = obj["id"].encode()
        value = dumps(obj)
    elif mutation == "delete_no_mode":
        obj.pop("mode", None)
        value = dumps(obj)
    elif mutation == "bad_ttl" and r is not None:
        obj["ttl_seconds"] = draw(st.sampled_from([0, -5, 10**12]))
        value = dumps(obj)
    elif mutation == "two_objects":
        value = value + b"{}"
    return key, value, headers, log_append, offset


@st.composite
def batches(draw: Any) -> list[RawMessage]:
    out = []
    offsets: dict[tuple[str, int], int] = {}
    for _ in range(draw(st.integers(1, 25))):
        name = draw(st.sampled_from(["a", "b", "a", "gone"]))
        group = GROUPS.get(name, GROUPS["a"])
        partition = draw(st.integers(0, 1))
        topic = f"{PREFIX}.{name}"
        offset = offsets.get((topic, partition), 0) + draw(st.integers(0, 2))
        offsets[(topic, partition)] = offset + 1
        key, value, headers, log_append, _ = _message(draw, group, offset)
        out.append(RawMessage(topic, partition, offset, key, value, headers, 1_700_000_000_123 + offset, log_append))
    return out


class _Letters:
    def __init__(self) -> None:
        self.sent: list[tuple[str, int, int, str]] = []

    def send(self, poison: Any) -> None:
        self.sent += [(p.raw.topic, p.raw.partition, p.raw.offset, p.reason) for p in poison]


def _canonical(table: pa.Table | None) -> Any:
    """The rows with every double as its bit pattern (so -0.0 != 0.0 and 1 ulp shows)."""
    if table is None:
        return None

    def bits(x: Any) -> Any:
        if isinstance(x, float):
            return struct.pack("<d", x).hex()
        if isinstance(x, list):
            return [bits(e) for e in x]
        return x

    cols = {}
    for f in table.schema:
        col = table.column(f.name)
        if pa.types.is_timestamp(f.type):
            col = col.cast(pa.int64())
        cols[f.name] = [bits(x) for x in col.to_pylist()]
    return (str(table.schema), cols)


def _run(batch: list[RawMessage], batch_decode: bool) -> tuple[Any, Any]:
    letters = _Letters()
    writer = OfflineWriter(_TABLES, wall_clock_ns=lambda: WT)
    # columns_from=1: every batch as columns, however small (else both sides would judge per record)
    applier = OfflineApplier(GroupView(lambda: dict(GROUPS)), writer, letters, PREFIX,  # type: ignore[arg-type]
                             batch_decode=batch_decode, columns_from=1)
    applier.add(batch)
    prepared = {}
    for tp in sorted({(r.topic, r.partition) for r in batch}):
        pw = writer._writers.get(tp)  # the test reads what a flush would write, without S3
        p = pw.prepare() if pw is not None else None
        prepared[tp] = None if p is None else (_canonical(p.rows), [(it[3], str(e)) for it, e in p.rejected],
                                               p.advance, pw.buffered_rows, pw._bytes)
    return letters.sent, prepared


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(batches())
def test_batch_and_per_record_paths_agree(batch: list[RawMessage]) -> None:
    letters_1, rows_1 = _run(batch, batch_decode=False)
    letters_2, rows_2 = _run(batch, batch_decode=True)
    assert letters_2 == letters_1
    assert rows_2 == rows_1


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(batches())
def test_the_same_when_big_batches_are_parsed_in_two_halves_at_once(batch: list[RawMessage]) -> None:
    """schemas.batch parses a batch of PARALLEL_PARSE_MIN_ROWS or more in two halves on two threads;
    lowered here so that the generated batches, good and bad rows mixed, take that path."""
    import schemas.batch as batch_module

    saved = batch_module.PARALLEL_PARSE_MIN_ROWS
    batch_module.PARALLEL_PARSE_MIN_ROWS = 2
    try:
        letters_2, rows_2 = _run(batch, batch_decode=True)
    finally:
        batch_module.PARALLEL_PARSE_MIN_ROWS = saved
    letters_1, rows_1 = _run(batch, batch_decode=False)
    assert letters_2 == letters_1
    assert rows_2 == rows_1


def test_the_batch_path_proves_the_good_rows() -> None:
    """A batch of valid puts goes through the columns, not the per-record path (else the
    differential test above would compare the per-record path with itself)."""
    from schemas.batch import decode_batch

    g = GROUPS["a"]
    v = compile_validator(g)
    msgs = [encode(v.validate({"rid": f"r{i}", "et": "2021-10-02T12:00:00.5Z", "i": i, "f": i / 3,
                               "s": "é" * i, "ls": ["x"], "si": [1, 2], "sf": [0.5], "v": [1.0, 2.0, 3.0]}))
            for i in range(50)]
    cols = decode_batch(g, [m[0] for m in msgs], [m[1] for m in msgs], [m[2] for m in msgs])
    assert cols.fast.all()
    assert not math.isnan(cols.event_time_ns[0])


def test_rotation_counts_and_sampled_sizes_match_over_many_chunks() -> None:
    """Rows and the sampled byte estimate (1 row in 256 stands for the next 255) are counted the
    same way by both paths, so rotation fires at the same row, whatever the chunking."""
    g = GROUPS["a"]
    v = compile_validator(g)
    batch = []
    for i in range(900):
        rec = {"rid": f"r{i % 37}", "et": "2021-10-02T12:00:00Z", "s": "x" * (i % 300), "ls": ["a"] * (i % 7)}
        if i % 97 == 5:
            msg: Any = validate_delete(g, f"r{i}", "2021-10-02T12:00:01Z")
        else:
            msg = v.validate(rec)
        key, value, headers = encode(msg)
        if i % 101 == 3:
            value = b"garbage"  # a per-record row in the middle of proven ones
        batch.append(RawMessage("fs.a", 0, i, key, value, headers))
    results = []
    for batch_decode in (False, True):
        letters = _Letters()
        writer = OfflineWriter(_TABLES, wall_clock_ns=lambda: WT)
        applier = OfflineApplier(GroupView(lambda: dict(GROUPS)), writer, letters, PREFIX,  # type: ignore[arg-type]
                                 batch_decode=batch_decode, columns_from=1)
        for start in range(0, len(batch), 130):
            applier.add(batch[start:start + 130])
        pw = writer._writers[("fs.a", 0)]
        p = pw.prepare()
        assert p is not None
        results.append((pw.buffered_rows, pw._bytes, _canonical(p.rows), p.advance, letters.sent))
    assert results[0][0] == 900 - 9
    assert results[1] == results[0]
