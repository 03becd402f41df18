"""CSV files, read with the group's schema: one record (or one reason) per row, with its line.

Python's csv module splits records (quoted fields may hold commas, quotes and newlines) and
leaves every cell as text; each cell then becomes its feature's type exactly
(``streams.datafiles.cells``). An empty cell is no value; ``""`` is the empty string.
A row that cannot be read (ragged, bad quoting, invalid UTF-8, a value that cannot be
represented) becomes a RowError for ingest to reject; the rest of the file goes on.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from schemas.group import FeatureGroup
from schemas.types import ScalarType
from streams.datafiles.cells import CellError, text_converter
from streams.datafiles.columns import check_columns
from streams.datafiles.formats import DataFileError
from streams.datafiles.lines import LINE_LIMIT, bounded_lines, quoted_empty_fields
from streams.rowsource import RowError

# csv's default field limit (128 KiB) is below the largest value (350 KB); a field beyond this
# is rejected, and bounds the memory a missing closing quote can take.
FIELD_LIMIT = LINE_LIMIT


class _LineTooLong(Exception):
    pass


class _Lines:
    """The file's lines, decoded, counted, and kept until the record they form has been read."""

    def __init__(self, lines: Iterator[bytes | None]) -> None:
        self._lines = lines
        self.count = 0
        self.pending: list[str] = []

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        raw = next(self._lines)
        self.count += 1
        if raw is None:
            raise _LineTooLong
        # surrogateescape keeps invalid bytes visible (as lone surrogates) so the row holding
        # them is rejected, instead of the whole file failing or the bytes being replaced.
        text = raw.decode("utf-8", "surrogateescape")
        self.pending.append(text)
        return text

    def take(self) -> str:
        text = "".join(self.pending)
        self.pending.clear()
        return text


def _header(reader: Any, lines: _Lines, path: Path, group: FeatureGroup) -> list[str]:
    try:
        header = next(reader)
    except StopIteration:
        raise DataFileError(f"{str(path)!r} is empty; a CSV file starts with a header naming the features of "
                            f"group {group.name!r}", group=group.name) from None
    except (csv.Error, _LineTooLong) as exc:
        raise DataFileError(f"{str(path)!r}: the header line is not valid CSV ({exc or 'too long'})",
                            group=group.name) from None
    text = lines.take()
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise DataFileError(f"{str(path)!r}: the header line is not valid UTF-8", group=group.name) from None
    check_columns(group, header, path)
    return header


def check_csv_header(path: Path, group: FeatureGroup) -> None:
    """DataFileError if the file's header does not fit ``group`` (read before anything is published)."""
    with path.open("rb") as f:
        lines = _Lines(bounded_lines(f))
        _header(csv.reader(lines, strict=True), lines, path, group)


def csv_records(path: Path, group: FeatureGroup) -> Iterator[tuple[int, Any, str]]:
    """``(first line, record or RowError, the record's text)`` for every row of the file."""
    if csv.field_size_limit() < FIELD_LIMIT:
        csv.field_size_limit(FIELD_LIMIT)
    where = f"feature group {group.name!r}"
    with path.open("rb") as f:
        lines = _Lines(bounded_lines(f))
        reader = csv.reader(lines, strict=True)
        header = _header(reader, lines, path, group)
        width = len(header)
        defs = [group.feature(n) for n in header]
        convert = [text_converter(fd) for fd in defs]
        strings = {i for i, fd in enumerate(defs) if fd.type is ScalarType.STRING and fd.collection is None}
        while True:
            first = lines.count + 1
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                yield first, RowError(f"{where}: the row is not valid CSV ({exc})"), lines.take()
                continue
            except _LineTooLong:
                lines.take()
                yield first, RowError(f"{where}: the line is longer than {LINE_LIMIT} bytes; a record is at "
                                      "most 350 KB"), ""
                continue
            text = lines.take()
            if not row:
                continue  # a blank line holds no record
            yield first, _record(where, header, defs, convert, strings, width, row, text), text


def _record(where: str, header: list[str], defs: list[Any], convert: list[Any], strings: set[int], width: int,
            row: list[str], text: str) -> Any:
    if len(row) != width:
        return RowError(f"{where}: the row has {len(row)} fields; the header has {width} "
                        f"({', '.join(header[:20])}{' ...' if width > 20 else ''})")
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            bad = text[exc.start].encode("utf-8", "surrogateescape")
            return RowError(f"{where}: the row is not valid UTF-8 (byte {bad!r}); save the file as UTF-8")
    record: dict[str, Any] = {}
    quoted: set[int] | None = None
    for i, cell in enumerate(row):
        name = header[i]
        if cell == "":
            if i in strings:
                if quoted is None:
                    quoted = quoted_empty_fields(text)
                record[name] = "" if i in quoted else None
            else:
                record[name] = None
            continue
        try:
            record[name] = convert[i](cell)
        except CellError as exc:
            return RowError(f"{where}, feature {name!r} ({defs[i].describe()}): value {_short(cell)} is invalid: "
                            f"{exc}", name)
    return record


def _short(text: str, limit: int = 80) -> str:
    return repr(text) if len(text) <= limit else f"{text[:limit]!r}... ({len(text)} chars)"
