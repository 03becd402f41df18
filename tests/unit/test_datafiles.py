"""Data files read with the group's schema: exact values, and a rejection per unreadable row."""

from __future__ import annotations

import struct
import tempfile
from decimal import Decimal
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.group import FeatureGroup
from schemas.types import FeatureDefinition as F
from schemas.validate import compile_validator
from schemas.wire import decode
from streams.datafiles import DataFileError, FileRows
from streams.ingest import encode_chunk
from streams.rowsource import RowError, iter_chunks

G = FeatureGroup("g", "id", "et", (
    F("id", "String"), F("et", "String"), F("n", "Integral"), F("x", "Fractional"), F("s", "String"),
    F("tags", "String", "List"), F("ids", "Integral", "Set"), F("v", "Fractional", "Vector", 2)))
ET = "2021-10-02T12:00:00Z"


def bits(x: float) -> bytes:
    return struct.pack("<d", x)


def publish(path: Path, fmt: str | None = None) -> tuple[list[dict], list, FileRows]:
    """What ingest would publish (decoded back from the wire) and what it would reject."""
    rows = FileRows(path, G, fmt)
    published, rejected = [], []
    for chunk in iter_chunks(rows, chunk_size=3):
        encoded, rejects = encode_chunk(compile_validator(G), chunk)
        published += [decode(k, v, h).record for k, v, h in encoded]
        rejected += rejects
    return published, [(rows.line_of(r.index), r.reason) for r in rejected], rows


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    p = tmp_path / name
    p.write_bytes(data)
    return p


# -------------------------------------------------------------------------------- exact values

def test_jsonl_floats_are_correctly_rounded_and_integers_exact_next_to_nulls(tmp_path):
    p = write(tmp_path, "a.jsonl", b"\n".join([
        b'{"id": "a", "et": "%s", "x": 5.81, "n": 9007199254740993}' % ET.encode(),
        b'{"id": "b", "et": "%s", "x": null, "n": null}' % ET.encode(),
        b'{"id": "c", "et": "%s", "x": -0.0, "n": -9223372036854775808, "v": [5e-324, 1.7976931348623157e308]}'
        % ET.encode()]))
    published, rejected, _ = publish(p)
    assert rejected == []
    a, b, c = published
    assert bits(a["x"]) == bits(5.81) and a["n"] == 9007199254740993
    assert b["x"] is None and b["n"] is None
    assert bits(c["x"]) == bits(-0.0) and c["n"] == -(2**63)
    assert [bits(x) for x in c["v"]] == [bits(5e-324), bits(1.7976931348623157e308)]


def test_jsonl_integral_written_with_a_fraction_is_read_exactly_not_through_a_double(tmp_path):
    p = write(tmp_path, "a.jsonl", b'{"id": "a", "et": "%s", "n": 9007199254740993.0, "ids": [3.0, 2]}'
              % ET.encode())
    (rec,), rejected, _ = publish(p)
    assert rejected == [] and rec["n"] == 9007199254740993 and rec["ids"] == [3, 2]


def test_csv_integral_with_empty_cells_is_exact_and_empty_string_differs_from_no_value(tmp_path):
    p = write(tmp_path, "a.csv", (
        "id,et,n,x,s,tags,ids,v\n"
        f"a,{ET},9007199254740993,5.81,\"\",,\"[1,2]\",\"[0.1,-0.0]\"\n"
        f"b,{ET},,,,,,\n"
        f"c,{ET},9223372036854775807,5e-324,007,\"[\"\"a,b\"\", \"\"😀\"\"]\",,\n"
        f"d,{ET},42.0,1.7976931348623157e308,\"x\r\ny, \"\"q\"\"\",[],,\n").encode())
    (a, b, c, d), rejected, _ = publish(p)
    assert rejected == []
    assert a["n"] == 9007199254740993 and bits(a["x"]) == bits(5.81) and a["s"] == ""
    assert a["ids"] == [1, 2] and [bits(x) for x in a["v"]] == [bits(0.1), bits(-0.0)]
    assert all(b[f] is None for f in ("n", "x", "s", "tags", "ids", "v"))
    assert c["n"] == 2**63 - 1 and bits(c["x"]) == bits(5e-324) and c["s"] == "007" and c["tags"] == ["a,b", "😀"]
    assert d["n"] == 42 and d["s"] == 'x\r\ny, "q"' and d["tags"] == []


def test_parquet_nullable_int64_max_is_exact(tmp_path):
    p = tmp_path / "a.parquet"
    pq.write_table(pa.table({"id": ["a", "b"], "et": [ET, ET],
                             "n": pa.array([2**63 - 1, None], pa.int64()),
                             "x": pa.array([None, 5.81], pa.float64()),
                             "tags": pa.array([["q"], None], pa.list_(pa.string()))}), p)
    (a, b), rejected, rows = publish(p)
    assert rejected == [] and rows.unit == "row"
    assert a["n"] == 2**63 - 1 and a["x"] is None and a["tags"] == ["q"]
    assert b["n"] is None and bits(b["x"]) == bits(5.81)


# -------------------------------------------------------------------------------- row-level errors

def test_jsonl_bad_lines_are_rejected_with_their_line_and_the_rest_is_kept(tmp_path):
    ok = b'{"id": "ok%d", "et": "%s"}'
    p = write(tmp_path, "a.jsonl", b"\xef\xbb\xbf" + b"\r\n".join([
        ok % (1, ET.encode()),                                   # 1 (after a BOM, with CRLF)
        b'{"id": "b", "et": "x", "x": NaN}',                     # 2
        b'{"id": "b", "et": "x", "x": Infinity}',                # 3
        b'{"id": "b", "et": "%s", "n": 9223372036854775808}' % ET.encode(),   # 4
        b'{"id": "b", "et": "%s", "n": 1e400}' % ET.encode(),                 # 5
        b'{"id": "b", "et": "%s", "x": 1e400}' % ET.encode(),                 # 6
        b'{"id": "b", "et": "%s", "n": 123456789012345678901234567890}' % ET.encode(),  # 7
        b'{"id": "b", "et": "x"',                                # 8 malformed
        b'',                                                     # 9 blank: no row
        b'{"id": "\xff\xfe", "et": "x"}',                        # 10 invalid UTF-8
        b'[1, 2]',                                               # 11
        b'{"id": "b", "et": "%s", "nope": 1}' % ET.encode(),     # 12 unknown feature
        ok % (2, ET.encode())]) + b"\r\n")                       # 13
    published, rejected, _ = publish(p)
    assert [r["id"] for r in published] == ["ok1", "ok2"]
    lines = dict(rejected)
    assert sorted(lines) == [2, 3, 4, 5, 6, 7, 8, 10, 11, 12]
    assert "NaN is not valid JSON" in lines[2] and "Infinity is not valid JSON" in lines[3]
    assert "'n'" in lines[4] and "signed 64-bit" in lines[4]
    assert "signed 64-bit" in lines[5] and "'x'" in lines[6] and "range of a double" in lines[6]
    assert "signed 64-bit" in lines[7] and "123456789012345678901234567890" in lines[7]
    assert "not valid JSON" in lines[8] and "not valid UTF-8" in lines[10]
    assert "not a JSON object" in lines[11] and "'nope'" in lines[12]


def test_csv_bad_rows_are_rejected_with_their_line_and_the_rest_is_kept(tmp_path):
    p = write(tmp_path, "a.csv", "\ufeffid,et,n,x,s\r\n".encode() + b"\r\n".join([
        f"ok1,{ET},1,0.5,\"multi\nline\"".encode(),           # 2-3
        b"r1,x,1",                                             # 4 ragged
        f"r2,{ET},9223372036854775808,,".encode(),            # 5 beyond int64
        f"r3,{ET},,1e400,".encode(),                          # 6
        f"r4,{ET},,NaN,".encode(),                            # 7
        f"r5,{ET},,,caf\xe9".encode("latin-1"),               # 8 not UTF-8
        f"r6,{ET},1.5,,".encode(),                            # 9 not whole
        f"r7,{ET},,,\"a\"b".encode(),                         # 10 bad quoting
        b"",                                                   # 11 blank
        f"ok2,{ET},,,".encode()]) + b"\r\n")                   # 12
    published, rejected, _ = publish(p)
    assert [r["id"] for r in published] == ["ok1", "ok2"] and published[0]["s"] == "multi\nline"
    lines = dict(rejected)
    assert sorted(lines) == [4, 5, 6, 7, 8, 9, 10]
    assert "3 fields; the header has 5" in lines[4]
    assert "'n'" in lines[5] and "signed 64-bit" in lines[5]
    assert "'x'" in lines[6] and "range of a double" in lines[6]
    assert "'x'" in lines[7] and "'NaN'" in lines[7]
    assert "not valid UTF-8" in lines[8] and "'1.5'" in lines[9] and "non-integer" in lines[9]
    assert "not valid CSV" in lines[10]


@pytest.mark.parametrize("header,why", [
    ("id,et,agee", "'agee', not a feature of group 'g'"),
    ("id,et,n,n", "'n' more than once"),
    ("id,n", "no column 'et'"),
    ("id,et,,n", "empty column name at column 3"),
])
def test_a_csv_header_that_does_not_fit_the_group_refuses_the_file(tmp_path, header, why):
    p = write(tmp_path, "a.csv", f"{header}\na,{ET},1\n".encode())
    with pytest.raises(DataFileError, match=why):
        FileRows(p, G)


def test_parquet_with_an_unknown_column_is_refused(tmp_path):
    p = tmp_path / "a.parquet"
    pq.write_table(pa.table({"id": ["a"], "et": [ET], "zz": [1]}), p)
    with pytest.raises(DataFileError, match="'zz', not a feature"):
        FileRows(p, G)


def test_empty_and_missing_files_are_clear_errors(tmp_path):
    with pytest.raises(DataFileError, match="is empty"):
        FileRows(write(tmp_path, "e.csv", b""), G)
    with pytest.raises(DataFileError, match="does not exist"):
        FileRows(tmp_path / "nope.jsonl", G)
    with pytest.raises(DataFileError, match="cannot read .* as parquet"):
        FileRows(write(tmp_path, "x.parquet", b"not parquet"), G)


def test_a_runaway_line_is_rejected_without_holding_it(tmp_path, monkeypatch):
    import streams.datafiles.lines as lines

    monkeypatch.setattr(lines, "LINE_LIMIT", 64)
    monkeypatch.setattr(lines.bounded_lines, "__defaults__", (64,))
    p = write(tmp_path, "a.jsonl", b'{"id": "a", "et": "%s"}\n{"id": "%s"}\n{"id": "c", "et": "%s"}\n'
              % (ET.encode(), b"x" * 200, ET.encode()))
    published, rejected, _ = publish(p)
    assert [r["id"] for r in published] == ["a", "c"]
    assert [line for line, _ in rejected] == [2] and "longer than" in rejected[0][1]


def test_rows_at_re_reads_the_rejected_rows_text(tmp_path):
    p = write(tmp_path, "a.csv", f"id,et,n\na,{ET},1\nb,{ET},x\nc,{ET},\"2\n\"\n".encode())
    rows = FileRows(p, G)
    assert sum(1 for _ in rows) == 3
    got = list(rows.rows_at({1, 2}))
    assert [(i, rec["id"], text) for i, rec, text in got] == [(1, "b", f"b,{ET},x\n"), (2, "c", f"c,{ET},\"2\n\"\n")]
    assert [rows.line_of(i) for i in range(3)] == [2, 3, 4]


def test_row_errors_survive_pickling_to_worker_processes():
    import pickle

    err = RowError("why", "n")
    assert pickle.loads(pickle.dumps(err)) == err


def test_decimal_values_never_reach_the_wire_as_decimals(tmp_path):
    p = write(tmp_path, "a.jsonl", b'{"id": "a", "et": "%s", "n": 12.0}' % ET.encode())
    rows = list(FileRows(p, G))
    assert rows[0]["n"] == Decimal("12.0")  # the reader keeps it exact ...
    (rec,), _, _ = publish(p)
    assert type(rec["n"]) is int and orjson.dumps(rec["n"]) == b"12"  # ... and the validator makes it an int


def test_a_csv_collection_cell_must_be_a_json_array(tmp_path):
    p = write(tmp_path, "a.csv", f"id,et,tags,ids\na,{ET},a;b,\nb,{ET},,\"[1, 2.5]\"\nc,{ET},\"[\"\"x\"\"]\",\n".encode())
    published, rejected, _ = publish(p)
    assert [r["id"] for r in published] == ["c"] and published[0]["tags"] == ["x"]
    lines = dict(rejected)
    assert "List<String> in a CSV cell is written as a JSON array" in lines[2]
    assert "'ids'" in lines[3] and "2.5" in lines[3]


@settings(max_examples=300, deadline=None)
@given(lines=st.lists(st.one_of(st.binary(max_size=40), st.sampled_from(
    [b'"', b'""', b'a,"b', b'\r', b'\xef\xbb\xbf', b'{"id": "a", "et": "x"}', b'NaN', b',,,,,,,', b'"x\n']))),
       fmt=st.sampled_from(["csv", "jsonl"]))
def test_no_bytes_after_the_header_fail_the_whole_file(lines, fmt):
    """Whatever follows a valid header, every row is read or rejected; nothing raises."""
    header = b"id,et,n,x,s,tags,ids,v\n" if fmt == "csv" else b""
    with tempfile.TemporaryDirectory() as tmp:
        content = header + b"\n".join(lines)
        rows = FileRows(write(Path(tmp), f"a.{fmt}", content), G)
        got = list(rows)
        assert all(isinstance(r, dict | RowError) for r in got)
        where = [rows.line_of(i) for i in range(len(got))]
        assert where == sorted(set(where)) and all(1 <= w <= content.count(b"\n") + 1 for w in where)
