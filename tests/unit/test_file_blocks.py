"""Differential: CSV and JSON Lines read in bulk blocks (Arrow) against the row-by-row reader.

On random files, good and bad lines mixed, ``FileRows.iter_parts`` + ``streams.bulkencode.encode_part``
(blocks read by Arrow, leftover lines row by row) and today's path (``FileRows`` iterated a record at a
time, ``encode_rows``) must give identical keys, values and headers in the same order, identical
rejections with identical reasons, and identical line numbers.
"""

from __future__ import annotations

import json
import logging
import struct
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import streams.datafiles.blocks as blocks
from schemas.group import FeatureDefinition as F
from schemas.group import FeatureGroup
from schemas.validate import compile_validator
from streams.bulkencode import encode_part
from streams.datafiles import FileRows
from streams.datafiles.blocks import TextBlock, block_columns, split_text
from streams.encoding import encode_rows

ET = "2021-10-02T12:00:00Z"
G = FeatureGroup("g", "id", "et", (
    F("id", "String"), F("et", "String"), F("n", "Integral"), F("x", "Fractional"), F("s", "String"),
    F("ids", "Integral", "Set"), F("v", "Fractional", "Vector", 2)))
NAMES = [f.name for f in G.features]
SETTINGS = settings(max_examples=80, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

floats = st.floats(allow_nan=True, allow_infinity=True)
float_texts = st.one_of(floats.map(repr), floats.map(str), st.sampled_from(
    ["1.", ".5", "+.5e-3", "00012", "1e400", "-1e400", "1E5", "-0", "-0.0", "0", "NaN", "inf", "1,5", " 1",
     "2.2250738585072011e-308", "9007199254740993", "123456789012345678901234567890", "0x10", "1e-400"]),
    st.from_regex(r"[+-]?[0-9]{1,25}(\.[0-9]{0,25})?([eE][+-]?[0-9]{1,3})?", fullmatch=True))
int_texts = st.one_of(st.integers(-2**63, 2**63 - 1).map(str), st.integers(-2**70, 2**70).map(str), st.sampled_from(
    ["+5", "007", "-0", "42.0", "1e3", "4.5", "abc", " 1", "9223372036854775808", "+", "1_000"]))
strings = st.text(alphabet=st.sampled_from(list('ab ,"\'\\é€😀\t\x1f') + ["\u2028"]), max_size=8)
times = st.sampled_from([ET, "2021-10-02T12:00:00.5Z", "2021-02-29T00:00:00Z", "2021-10-02 12:00:00Z", "x"])


def csv_cell(text: str, quote: bool) -> str:
    if quote or any(c in text for c in ',"\n\r') or text.startswith(" "):
        return '"' + text.replace('"', '""') + '"'
    return text


@st.composite
def csv_line(draw: st.DrawFn) -> str:
    odd = draw(st.integers(0, 3)) == 0  # a cell the fast path may not take (the row goes row by row)
    cells = {"id": draw(st.one_of(st.sampled_from(["a", "b", "c"]), strings)), "et": draw(times),
             "n": draw(st.one_of(st.just(""), int_texts if odd else st.integers(-2**63, 2**63 - 1).map(str))),
             "x": draw(st.one_of(st.just(""), float_texts if odd else floats.map(repr))),
             "s": draw(st.one_of(st.just(""), strings)),
             # The JSON-array columns are read together as {"c0": <ids>, "c1": <v>}: some cells reach for
             # the other's member, or close the object early (blocks._csv_list_columns).
             "ids": draw(st.sampled_from(["", "[1]", "[1, 2]", "[1, 1]", "[]", "null", " [1]", "1", "[1.0]", "[null]",
                                          '[1], "c1": [9, 9]', '[2]} {"c0": [3]', '[1], "zz": 1']
                                         if odd else ["", "[1, 2]"])),
             "v": draw(st.sampled_from(["", "[1.5, 2]", "[1]", "[-0, 0.1]", "[1e400, 1]", '["a", 1]', "[[1], 2]",
                                        '[1.5, 2], "c0": [7]', '[1, 2]}']
                                       if odd else ["", "[1.5, 2]"]))}
    quoted = draw(st.booleans())
    line = ",".join(csv_cell(cells[n], quoted and n == "s") for n in NAMES)
    if draw(st.integers(0, 9)):
        return line
    return draw(st.sampled_from([
        line.rsplit(",", 1)[0],  # ragged
        "", line + ',"x\ny"', 'ab"c,' + line, line.replace(",", ',"q"z,', 1), line + "\r",
        "a," + ET + ",\x00,,,,", "\ufeff" + line, line.replace("a", "\udcff", 1)]))


def json_value(draw: st.DrawFn, name: str, bad: bool) -> str:
    """A value's JSON text: one Arrow reads (``bad``: one that may make Arrow refuse the whole block)."""
    if name in ("id", "s"):
        odd = ['"\\ud800"', "5", "true"] if bad else ['"\\ud83d\\ude00"', '"a\\/b\\u00e9"', "null"]
        return draw(st.one_of(strings.map(lambda s: orjson.dumps(s).decode()), st.sampled_from(odd)))
    if name == "et":
        return json.dumps(draw(times))
    if name == "n":
        odd = ["5.0", "1e2", "true", '"7"', "99999999999999999999"] if bad else ["-0", "null", "0"]
        return draw(st.one_of(st.integers(-2**63, 2**63 - 1).map(str), st.sampled_from(odd)))
    if name == "x":
        odd = (["1e400", "Infinity", '"1.5"', "true"] if bad else
               ["-0", "-0.0", "5", "NaN", "null", "123456789012345678901234567890", "9007199254740993", "-1e-400"])
        return draw(st.one_of(floats.filter(lambda f: f == f and abs(f) != float("inf")).map(repr),
                              st.integers(-2**70, 2**70).map(str), st.sampled_from(odd)))
    return draw(st.sampled_from(["[1, 2]", "[1.0]", "null", "[]"] if name == "ids" else ["[1.5, 2]", "[-0, 1]", "null"]))


@st.composite
def json_line(draw: st.DrawFn) -> str:
    names = [n for n in NAMES if n in ("id", "et") or draw(st.booleans())]
    if draw(st.integers(0, 9)) == 0:
        names = [n for n in names if n != draw(st.sampled_from(["id", "et"]))]  # a key missing
    bad = draw(st.integers(0, 9)) == 0
    line = "{" + ", ".join(f'"{n}": {json_value(draw, n, bad)}' for n in names) + "}"
    if draw(st.integers(0, 9)):
        return line
    return draw(st.sampled_from([
        "", "  ", line[:-1], "[1]", line + " " + line, line.replace("{", '{"zz": 1, ', 1), line + "\r",
        line.replace("{", '{"id": "dup", ', 1), "\ufeff" + line, '{"id": "a\xff"}']))


def bulk_path(rows: FileRows) -> tuple[list, list, list, list]:
    validator = compile_validator(G)
    keys, values, headers, rejects = [], [], [], []
    for start, part in rows.iter_parts(5_000):
        done = encode_part(validator, start, part)
        keys += done.keys
        values += done.values
        headers.append(done.headers)
        rejects += [(rows.line_of(r.index), r.index, r.reason, r.feature) for r in done.rejects]
    return keys, values, [h for h in headers if h], rejects


def row_path(path: Path) -> tuple[list, list, list, list]:
    rows = FileRows(path, G)
    done = encode_rows(compile_validator(G), (0, (), list(rows)))
    rejects = [(rows.line_of(r.index), r.index, r.reason, r.feature) for r in done.rejects]
    return done.keys, done.values, [done.headers] if done.headers else [], rejects


class _Errors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def check_same(path: Path) -> None:
    errors = _Errors()
    log = logging.getLogger("streams.bulkencode")
    log.addHandler(errors)
    try:
        bulk = bulk_path(FileRows(path, G))
    finally:
        log.removeHandler(errors)
    # The bulk encoder's own guard (its first row re-encoded per record) must never have had to act.
    assert errors.messages == []
    one = row_path(path)
    assert bulk[0] == one[0]
    assert bulk[1] == one[1]
    assert all(h == one[2][0] for h in bulk[2]) and bool(bulk[2]) == bool(one[2])
    assert bulk[3] == one[3]


@SETTINGS
@given(lines=st.lists(csv_line(), min_size=1, max_size=25), block=st.integers(40, 2_000), crlf=st.booleans())
# A cell starting with U+FEFF at a block's start: Arrow would drop it as a BOM (found by CI's run).
@example(lines=["\ufeffa,2021-10-02T12:00:00Z,,,,,"], block=40, crlf=False)
@example(lines=["b,2021-10-02T12:00:00Z,,,,,", "\ufeffa,2021-10-02T12:00:00Z,,,,,"], block=40, crlf=True)
def test_csv_in_blocks_equals_row_by_row(tmp_path_factory, monkeypatch_session, lines, block, crlf):
    end = "\r\n" if crlf else "\n"
    path = tmp_path_factory.mktemp("csv") / "in.csv"
    path.write_bytes((",".join(NAMES) + end + end.join(lines) + end).encode("utf-8", "surrogateescape"))
    monkeypatch_session.setattr(blocks, "BLOCK_BYTES", block)
    check_same(path)


@SETTINGS
@given(lines=st.lists(json_line(), min_size=1, max_size=25), block=st.integers(40, 2_000))
def test_jsonl_in_blocks_equals_row_by_row(tmp_path_factory, monkeypatch_session, lines, block):
    path = tmp_path_factory.mktemp("jsonl") / "in.jsonl"
    path.write_bytes(("\n".join(lines) + "\n").encode("utf-8", "surrogateescape"))
    monkeypatch_session.setattr(blocks, "BLOCK_BYTES", block)
    check_same(path)


@pytest.fixture(scope="module")
def monkeypatch_session():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def good_rows(n: int) -> list[dict]:
    return [{"id": f"r{i}", "et": ET, "n": i * 7 - 3, "x": i / 3, "s": f'say "hi", {i}'} for i in range(n)]


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_plain_files_go_through_arrow_whole(tmp_path, fmt):
    """The fast path is taken: every block is a TextBlock, Arrow reads it, and no row is left over."""
    recs = good_rows(300)
    if fmt == "csv":
        text = ",".join(NAMES) + "\r\n" + "".join(
            f'{r["id"]},{r["et"]},{r["n"]},{r["x"]!r},"{r["s"].replace(chr(34), 2 * chr(34))}",,\r\n' for r in recs)
        path = tmp_path / "a.csv"
    else:
        text = "".join(orjson.dumps(r).decode() + "\n" for r in recs)
        path = tmp_path / "a.jsonl"
    path.write_text(text)
    parts = [item for _, item in split_text(path, G, fmt, block_bytes=4096)]
    assert len(parts) > 2 and all(isinstance(p, TextBlock) for p in parts)
    for p in parts:
        table, unsure = block_columns(p, G)
        assert not unsure.any()
        done = encode_part(compile_validator(G), 0, p)
        assert done.rejects == [] and len(done.keys) == p.rows
    check_same(path)


@settings(max_examples=300, deadline=None)
@given(text=st.one_of(st.floats(allow_nan=False, allow_infinity=False).map(repr),
                      st.from_regex(r"[+-]?[0-9]{1,40}(\.[0-9]{0,40})?([eE][+-]?[0-9]{1,3})?", fullmatch=True)))
def test_arrows_decimal_parse_is_pythons_correctly_rounded_float(text):
    """The CSV fast path's doubles come from Arrow's cast; they must be the bits ``float(text)`` gives."""
    got = pc.cast(pa.array([text]), pa.float64())[0].as_py()
    assert struct.pack("<d", got) == struct.pack("<d", float(text))


TRICKY_CSV = [("ids", "null"), ("ids", " [1]"), ("ids", "1"), ("ids", '"[1.0]"'), ("ids", "[null]"), ("ids", "[]"),
              ("ids", '"[1, 1]"'), ("v", '"[-0, 0.1]"'), ("v", '"[1e400, 1]"'), ("v", '"[""a"", 1]"'), ("v", "[2]"),
              ("n", "+5"), ("n", "007"), ("n", "42.0"), ("n", "9223372036854775808"), ("n", "-0"), ("n", '""'),
              ("x", "-0"), ("x", "1."), ("x", ".5"), ("x", "1e400"), ("x", "NaN"), ("x", "1e-400"), ("x", '""'),
              ("s", '""'), ("s", ""), ("s", '"a""b"'), ("et", "2021-10-02 12:00:00Z"), ("id", '""'),
              # The JSON-array columns are read together, as {"c0": <ids>, "c1": <v>}: cells that reach into
              # the other's member, or close the document early, must be refused, not read as the other's value.
              ("ids", '"[1], ""c1"": [9, 9]"'), ("v", '"[1.5, 2], ""c0"": [7]"'), ("ids", '"[2]} {""c0"": [3]"'),
              ("v", '"[1, 2]}"'), ("ids", '"[1], ""zz"": 1"')]


@pytest.mark.parametrize(("name", "cell"), TRICKY_CSV)
def test_a_tricky_csv_cell_between_good_rows(tmp_path, name, cell):
    """Each cell alone in a block of good rows: what Arrow reads of it must be what the row path reads."""
    good = {"id": "a", "et": ET, "n": "1", "x": "0.5", "s": "t", "ids": '"[1, 2]"', "v": '"[1.5, 2]"'}
    rows = [good, {**good, "id": "b", name: cell}, {**good, "id": "c"}]
    path = tmp_path / "a.csv"
    path.write_text(",".join(NAMES) + "\n" + "".join(",".join(r[n] for n in NAMES) + "\n" for r in rows))
    check_same(path)


TRICKY_JSON = [("ids", "null"), ("ids", "[1.0]"), ("ids", "[null]"), ("ids", "[1, 1]"), ("v", "[-0, 0.1]"),
               ("v", "[1, 2]"), ("v", "[1.5]"), ("x", "-0"), ("x", "-0.0"), ("x", "5"), ("x", "NaN"),
               ("x", "123456789012345678901234567890"), ("n", "-0"), ("n", "5.0"), ("s", '"\\ud83d\\ude00"'),
               ("s", '"\\u0000"'), ("id", '""'), ("id", "null")]


@pytest.mark.parametrize(("name", "value"), TRICKY_JSON)
def test_a_tricky_json_value_between_good_lines(tmp_path, name, value):
    good = {"id": '"a"', "et": f'"{ET}"', "n": "1", "x": "0.5", "s": '"t"', "ids": "[1, 2]", "v": "[1.5, 2]"}
    rows = [good, {**good, "id": '"b"', name: value}, {**good, "id": '"c"'}]
    path = tmp_path / "a.jsonl"
    path.write_text("".join("{" + ", ".join(f'"{n}": {r[n]}' for n in NAMES) + "}\n" for r in rows))
    check_same(path)


def test_a_big_file_is_cut_in_4_mib_blocks_and_a_small_one_finer_but_not_below_1_mib(tmp_path, monkeypatch):
    mib = 1 << 20
    monkeypatch.setattr(blocks, "BLOCK_BYTES", 4 * mib)  # the default; the property tests above shrink it
    assert blocks.block_size(2 * 1024 * mib) == 4 * mib
    assert blocks.block_size(32 * mib) == 2 * mib  # 16 blocks for the workers to share
    assert blocks.block_size(3 * mib) == blocks.block_size(0) == mib
    line = b'{"id": "c1", "et": "2021-10-02T12:00:00Z", "n": 7}\n'
    path = tmp_path / "in.jsonl"
    path.write_bytes(line * (40 * mib // len(line)))  # 40 MiB: 16 blocks of 2.5 MiB, cut at line ends
    parts = [part for _, part in split_text(path, G, "jsonl")]
    assert all(isinstance(p, TextBlock) for p in parts) and len(parts) in (16, 17)
    assert max(len(p.data) for p in parts) <= 40 * mib // 16 + len(line)
    assert sum(p.rows for p in parts) == 40 * mib // len(line)
