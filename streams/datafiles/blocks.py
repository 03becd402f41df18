"""CSV and JSON Lines read in blocks: Arrow's readers for the plain lines, the row-by-row path for the rest.

The parent (``split_text``) cuts the file into blocks of whole lines and keeps a block for bulk reading
only when every line of it is one record: no blank line, no newline or stray carriage return inside a
CSV field, every CSV quote part of a well-formed single-line quoted field, no line too long, no BOM.
Such a block is a :class:`TextBlock`; its row ``i`` is its line ``i``, so line numbers need no parsing.
Any other block is read by today's row-by-row reader (``csvrows.CsvReader``, ``jsonlrows``), which also
carries a quoted CSV field across the block's end.

A worker reads a TextBlock with Arrow (``block_columns``), every column as text for CSV and with the
group's types for JSON Lines, and converts each cell only where the conversion is provably the one the
row-by-row reader makes (``cells``); the rows with any other cell are "unsure". The unsure rows, and the
ones the bulk encoder does not prove valid, are read again one line at a time by the row-by-row
functions (``block_records``): their records, rejections and reasons are exactly today's.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from schemas.column_checks import one_array
from schemas.group import FeatureGroup
from schemas.types import ScalarType
from streams.datafiles import lines as _lines
from streams.datafiles.cells import RecordReader
from streams.datafiles.csvrows import CsvReader, CsvRowParser
from streams.datafiles.jsonlrows import jsonl_record
from streams.datafiles.lines import BOM, LINE_LIMIT, bounded_lines
from streams.rowsource import RowError

# Up to 4 MiB of text per block: a worker's cost per block is partly fixed (Arrow's reader set up, a regex
# compiled per numeric column, one JSON read per list column), and 1 MiB blocks of the benchmark's 11-feature
# CSV cost its workers 12.0-12.8 CPU-µs a row against 9.4-9.5 with 4 MiB (JSON Lines 10.5-10.7 against
# 9.1-9.2), 80-82k rows/s against 93-95k. A few blocks in flight to the workers still keep memory flat.
# A smaller file is cut finer, down to 1 MiB, so that it still makes about BLOCKS_PER_FILE blocks for the
# workers to share: fewer than that, and one worker waits while the other reads the last block.
BLOCK_BYTES = 4 << 20
MIN_BLOCK_BYTES = 1 << 20
BLOCKS_PER_FILE = 16

# A CSV line Python's csv module and Arrow read alike, as one record: fields plain or quoted (at the
# field's start, inner quotes doubled, closed right before a delimiter or the line end), no NUL, no
# carriage return but the one before the newline. (RE2, through Arrow: linear in the text, where
# Python's re took about 10 us per row of a CSV with long quoted texts.)
_FIELD = r'(?:[^",\r\n\x00]*|"(?:[^"\r\n\x00]|"")*")'
_CSV_LINE = rf"^{_FIELD}(?:,{_FIELD})*\r?$"
_CSV_BLANK = r"^\r?$"  # csv reads no record from it
_JSONL_BLANK = r"^[ \t\r\x0b\x0c]*$"  # bytes.strip() leaves nothing
# cells.py's forms, as RE2 patterns over whole cells.
_INT = r"^[+-]?[0-9]{1,18}$"  # 19 digits may not fit int64: left to the row path, which says why
_DECIMAL = r"^[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?$"
_MAX_NUMBER_TEXT = 400


@dataclass(frozen=True)
class TextBlock:
    """Whole lines of a CSV (after its header) or JSON Lines file, one record per line."""

    fmt: str
    header: tuple[str, ...]  # CSV's columns; () for JSON Lines
    data: bytes
    rows: int
    group: FeatureGroup = field(repr=False, compare=False)

    def to_chunk(self, start: int) -> tuple[int, tuple[str, ...], list[Any]]:
        """The block as ``streams.rowsource`` chunks are: every line's record (or RowError), row by row."""
        return start, (), block_records(self, self.group, list(range(self.rows)))


# -- the parent: cutting the file ------------------------------------------------------------------

def split_text(path: Path, group: FeatureGroup, fmt: str, block_bytes: int | None = None,
               ) -> Iterator[tuple[int, Any]]:
    """``(first line, TextBlock)`` or ``(line, record or RowError)`` in file order, for every row."""
    block_bytes = block_bytes or block_size(path.stat().st_size)
    with path.open("rb") as f:
        if fmt == "csv":
            csv_reader = CsvReader(f, path, group)
            header: tuple[str, ...] = tuple(csv_reader.header)
            lines_before = csv_reader.lines_read
        else:
            header = ()
            lines_before = 0
        while True:
            pos = f.tell()
            data = f.read(min(block_bytes, _lines.LINE_LIMIT))  # so only its last line can be too long
            if not data:
                return
            if not data.endswith(b"\n"):
                data += f.readline(_lines.LINE_LIMIT)  # up to the end of the last line (or a runaway line's limit)
            rows, plain = _lines_and_plain(data, fmt)
            if plain:
                yield lines_before + 1, TextBlock(fmt, header, data, rows, group)
                lines_before += rows
                continue
            # Not plain: these lines (and any a record runs on into) are read row by row.
            f.seek(pos)
            end = lines_before + rows
            if fmt == "csv":
                csv_reader.resume(lines_before)
                while csv_reader.lines_read < end:
                    try:
                        line, record, _ = next(csv_reader)
                    except StopIteration:
                        return
                    yield line, record
                lines_before = csv_reader.lines_read
            else:
                where = f"feature group {group.name!r}"
                reader = RecordReader.for_group(group)
                number = lines_before
                for raw in bounded_lines(f, strip_bom=pos == 0):
                    number += 1
                    if raw is None:
                        yield number, _too_long(where)
                    elif raw.strip():
                        yield number, jsonl_record(reader, where, raw)
                    if number >= end:
                        break
                lines_before = number


def block_size(file_bytes: int) -> int:
    """Bytes per block for a file of ``file_bytes``: BLOCK_BYTES, or less for a small file (see BLOCK_BYTES)."""
    return min(BLOCK_BYTES, max(MIN_BLOCK_BYTES, file_bytes // BLOCKS_PER_FILE))


def _too_long(where: str) -> Any:
    return RowError(f"{where}: the line is longer than {LINE_LIMIT} bytes; a record is at most 350 KB")


def _lines_and_plain(data: bytes, fmt: str) -> tuple[int, bool]:
    """(lines in ``data``, whether every one of them is exactly one record, read alike by Arrow and the
    row-by-row reader). The count comes from the proof's own pass where it makes one: a separate
    ``bytes.count`` read the block once more, 0.29 µs a row of the parent (4 MiB blocks of 1 KB lines)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    # The block's lines without the last one's end, as a view: slicing the bytes copied the block.
    size = len(data) - 1 if data.endswith(b"\n") else len(data)
    body = memoryview(data)[:size]
    last = data.rfind(b"\n", 0, len(data) - 1) + 1
    # A BOM: Arrow's readers drop a UTF-8 BOM at the start of whatever buffer they are given, and each
    # block is given alone: a CSV cell or JSON line that starts with U+FEFF in the middle of a file
    # would lose it. Such a block goes row by row (hypothesis found the CSV case), as one with a line
    # too long does.
    if len(data) - last >= _lines.LINE_LIMIT or data.startswith(BOM):
        return data.count(b"\n", 0, size) + 1, False
    if fmt == "jsonl":
        ends, may_be_blank = _line_ends_and_blank_starts(body)
        if not may_be_blank:
            return ends + 1, True  # the only test of a JSON Lines block (its lines cannot hold a newline)
    # One list of the body's lines, the body not copied into Arrow; the list's values are the lines
    # themselves (pc.list_flatten copied them, 0.24 µs a row more).
    whole = pa.Array.from_buffers(pa.large_binary(), 1, [None, pa.py_buffer(np.array([0, size], np.int64)),
                                                         pa.py_buffer(body)])
    lines = pc.split_pattern(whole, b"\n").values
    if pc.any(pc.match_substring_regex(lines, _JSONL_BLANK if fmt == "jsonl" else _CSV_BLANK)).as_py():
        return len(lines), False
    return len(lines), fmt == "jsonl" or pc.all(pc.match_substring_regex(lines, _CSV_LINE)).as_py()


_BLANK_START = np.zeros(256, dtype=bool)
_BLANK_START[list(b" \t\r\x0b\x0c\n")] = True  # what bytes.strip() strips, and an empty line's newline


def _line_ends_and_blank_starts(body: memoryview) -> tuple[int, bool]:
    """(newlines in ``body``, whether a line of it may be blank). A line may be blank when it starts with
    a byte ``bytes.strip()`` strips: one look at each line's first byte, where the regex read every
    byte of every line (the whole proof of a 1 MiB block of 1 KB lines: 0.50 µs a line with the regex,
    0.25 with this, warm); a block where some line starts with whitespace still goes to the regex."""
    if not body:
        return 0, True
    data = np.frombuffer(body, dtype=np.uint8)
    starts = np.flatnonzero(data == 10) + 1
    if len(starts) and starts[-1] == len(data):
        return len(starts), True  # the body ends with a newline: its last line is empty
    return len(starts), bool(_BLANK_START[data[0]] or _BLANK_START[data[starts]].any())


# -- a worker: Arrow's read of a block -------------------------------------------------------------

def block_columns(block: TextBlock, group: FeatureGroup) -> tuple[Any, np.ndarray] | None:
    """(Arrow table with the values the row-by-row reader gives, rows it may not give alike), or None
    when Arrow does not read the block as one row per line (every row then goes row by row)."""
    import pyarrow as pa

    try:
        table = _read_csv(block) if block.fmt == "csv" else _read_jsonl(block, group)
        if table.num_rows != block.rows:
            return None
        unsure = np.zeros(block.rows, dtype=bool)
        columns = {name: one_array(table.column(name)) for name in table.column_names}
        if block.fmt == "csv":
            # The JSON-array columns in one JSON read (each read has a cost per row of its own).
            lists = _csv_list_columns([group.feature(n) for n in columns if group.feature(n).collection is not None],
                                      columns, unsure)
            arrays = [lists[name] if name in lists else _csv_cells(group.feature(name), col, unsure)
                      for name, col in columns.items()]
        else:
            arrays = [_json_values(group.feature(name), col, unsure) for name, col in columns.items()]
    except (pa.ArrowException, ValueError):
        return None
    return pa.Table.from_arrays(arrays, names=table.column_names), unsure


def _read_csv(block: TextBlock) -> Any:
    import pyarrow as pa
    import pyarrow.csv as pcsv

    return pcsv.read_csv(
        io.BytesIO(block.data),
        read_options=pcsv.ReadOptions(column_names=list(block.header), use_threads=False,
                                      block_size=len(block.data) + 1),
        parse_options=pcsv.ParseOptions(delimiter=",", quote_char='"', double_quote=True, escape_char=False,
                                        newlines_in_values=False, ignore_empty_lines=False),
        # Every cell as its text: an empty cell is null (no value), a quoted empty one is "" (cells.py).
        convert_options=pcsv.ConvertOptions(column_types={n: pa.string() for n in block.header},
                                            null_values=[""], strings_can_be_null=True,
                                            quoted_strings_can_be_null=False))


def _read_jsonl(block: TextBlock, group: FeatureGroup) -> Any:
    import pyarrow as pa
    import pyarrow.json as pjson

    fields = [pa.field(fd.name, _list_type(fd)) for fd in group.features]
    return pjson.read_json(
        io.BytesIO(block.data),
        read_options=pjson.ReadOptions(use_threads=False, block_size=len(block.data) + 1),
        # A key that is no feature, a value of another JSON type, a duplicated key, a number that does
        # not fit: Arrow refuses the block, and every line goes row by row.
        parse_options=pjson.ParseOptions(explicit_schema=pa.schema(fields), unexpected_field_behavior="error",
                                         newlines_in_values=False))


def _csv_cells(fd: Any, col: Any, unsure: np.ndarray) -> Any:
    """A CSV column's texts as ``cells.text_converter`` reads them, where that is certain (a scalar
    feature's: the JSON-array columns are read by ``_csv_list_columns``)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if fd.collection is not None:
        raise ValueError(f"{fd.name}: a JSON-array column is read by _csv_list_columns")  # the block goes row by row
    if fd.type is ScalarType.STRING:
        return col
    present = _present(col)
    if fd.type is ScalarType.INTEGRAL:
        good = pc.fill_null(pc.match_substring_regex(col, _INT), False)
        text = pc.replace_substring_regex(col, r"^\+", "")  # Arrow's integer cast takes no '+'
        target = pa.int64()
    else:
        good = pc.and_(pc.fill_null(pc.match_substring_regex(col, _DECIMAL), False),
                       pc.less_equal(pc.utf8_length(col), _MAX_NUMBER_TEXT))
        text = col
        target = pa.float64()
    good = pc.fill_null(good, False)
    values = pc.cast(pc.if_else(good, text, pa.scalar(None, pa.string())), target)
    if target == pa.float64():
        good = pc.fill_null(pc.and_(good, pc.is_finite(values)), False)  # beyond a double: the row path rejects it with the reason
    unsure |= pc.fill_null(pc.and_(present, pc.invert(good)), False).to_numpy(zero_copy_only=False)
    return pc.if_else(good, values, pa.scalar(None, target))


def _json_values(fd: Any, col: Any, unsure: np.ndarray) -> Any:
    """A JSON Lines column as ``cells.RecordReader`` reads it, where that is certain."""

    if fd.type is ScalarType.FRACTIONAL:
        _negative_zeros(col, unsure)
    return col


def _negative_zeros(col: Any, unsure: np.ndarray) -> None:
    """JSON ``-0`` is the integer 0 to orjson (0.0 once validated) and -0.0 to Arrow: those rows go row
    by row (a written ``-0.0`` is -0.0 to both, and is read alike there too)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if pa.types.is_list(col.type):
        parents = pc.list_parent_indices(col).to_numpy(zero_copy_only=False)
        col = pc.list_flatten(col)
    else:
        parents = None
    values = pc.fill_null(col, 1.0).to_numpy(zero_copy_only=False)
    zero = (values == 0) & np.signbit(values)
    if zero.any():
        unsure[parents[zero] if parents is not None else zero] = True


def _csv_list_columns(fds: list[Any], columns: dict[str, Any], unsure: np.ndarray) -> dict[str, Any]:
    """The CSV columns of JSON arrays (``cells._collection``) of ``fds``, read by Arrow's JSON reader as
    one document per row, ``{"c0": <cell>, "c1": <cell>, ...}``: one read for all of them, where a read
    per column cost its own pass per row (the benchmark's two list columns: 1.6 µs a row read apart). A
    cell that does not start with ``[`` goes row by row. When Arrow refuses the joint read (a cell that is
    no JSON array, or text that reaches into another cell's member, which Arrow refuses as a duplicated
    or unknown key), each column is read alone, so a bad cell costs only its column; a column Arrow
    refuses alone goes row by row."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from schemas.column_json import TEXT, concat, lit

    if not fds:
        return {}
    parts: list[Any] = []
    present: list[Any] = []
    starts: list[Any] = []  # the present cells that start with "["
    for i, fd in enumerate(fds):
        col = columns[fd.name]
        present.append(_present(col))
        starts.append(pc.and_(present[i], pc.fill_null(pc.match_substring_regex(col, r"^\["), False)))
        parts += [lit(("{" if i == 0 else ",") + f'"c{i}":'), pc.if_else(starts[i], pc.cast(col, TEXT), lit("null"))]
    table = _json_documents(concat(*parts, lit("}\n")),
                            pa.schema([pa.field(f"c{i}", _list_type(fd)) for i, fd in enumerate(fds)]))
    if table is not None:
        return {fd.name: _csv_array_values(fd, one_array(table.column(f"c{i}")), present[i], starts[i], unsure)
                for i, fd in enumerate(fds)}
    if len(fds) > 1:
        return {name: array for fd in fds for name, array in _csv_list_columns([fd], columns, unsure).items()}
    unsure |= present[0].to_numpy(zero_copy_only=False).astype(bool)
    return {fds[0].name: pa.nulls(len(columns[fds[0].name]), _list_type(fds[0]))}


def _json_documents(lines: Any, schema: Any) -> Any | None:
    """Arrow's JSON read of ``lines`` (one document each, newline included) with ``schema``: the table, or
    None when Arrow refuses them or reads another number of rows than lines (a line holding two documents)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.json as pjson

    from schemas.column_json import lit

    n = len(lines)
    text = pc.binary_join(pa.LargeListArray.from_arrays(pa.array([0, n], pa.int64()), lines), lit(""))[0].as_buffer()
    try:
        table = pjson.read_json(
            pa.BufferReader(text), read_options=pjson.ReadOptions(use_threads=False, block_size=text.size + 1),
            parse_options=pjson.ParseOptions(explicit_schema=schema, unexpected_field_behavior="error",
                                             newlines_in_values=False))
    except (pa.ArrowException, ValueError):
        return None
    return table if table.num_rows == n else None


def _present(col: Any) -> Any:
    """Where a CSV cell holds a value: "" (quoted) is no value outside String features."""
    import pyarrow.compute as pc

    return pc.fill_null(pc.not_equal(col, ""), False)


def _csv_array_values(fd: Any, values: Any, present: Any, arrays: Any, unsure: np.ndarray) -> Any:
    """The values Arrow read from a column's cells that start with ``[`` (``arrays``); the other present
    cells, and the JSON ``-0`` of a Fractional one, go row by row."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if fd.type is ScalarType.FRACTIONAL:
        _negative_zeros(values, unsure)
    unsure |= pc.and_(present, pc.invert(arrays)).to_numpy(zero_copy_only=False).astype(bool)
    return pc.if_else(arrays, values, pa.scalar(None, _list_type(fd)))


def _list_type(fd: Any) -> Any:
    import pyarrow as pa

    scalar = {ScalarType.STRING: pa.string(), ScalarType.INTEGRAL: pa.int64(),
              ScalarType.FRACTIONAL: pa.float64()}[fd.type]
    return scalar if fd.collection is None else pa.list_(scalar)


def block_records(block: TextBlock, group: FeatureGroup, positions: list[int]) -> list[Any]:
    """The records (or RowErrors) the row-by-row reader gives for the block's lines at ``positions``."""
    if not positions:
        return []
    lines = block.data.split(b"\n", max(positions) + 1)  # no further than needed (often just the first line)
    where = f"feature group {group.name!r}"
    if block.fmt == "csv":
        parser = CsvRowParser(group, list(block.header))
        return [parser.line(_line(lines, i).decode("utf-8", "surrogateescape")) for i in positions]
    reader = RecordReader.for_group(group)
    return [jsonl_record(reader, where, _line(lines, i)) for i in positions]


def _line(lines: list[bytes], i: int) -> bytes:
    return lines[i] + b"\n" if i + 1 < len(lines) else lines[i]
