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
from typing import Any, BinaryIO

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

    def restart(self, lines: Iterator[bytes | None], count: int) -> None:
        self._lines = lines
        self.count = count

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
    with path.open("rb") as f:
        yield from CsvReader(f, path, group)


class CsvRowParser:
    """One CSV row's cells -> its record (or RowError), for the columns of a header.

    Also what ``streams.datafiles.blocks`` uses for a line of a bulk block that Arrow's path does not
    take: the same function, so the record or reason is the one a row-by-row read gives."""

    def __init__(self, group: FeatureGroup, header: list[str]) -> None:
        self.where = f"feature group {group.name!r}"
        self.header = header
        self.width = len(header)
        self.defs = [group.feature(n) for n in header]
        self.convert = [text_converter(fd) for fd in self.defs]
        self.strings = {i for i, fd in enumerate(self.defs)
                        if fd.type is ScalarType.STRING and fd.collection is None}

    def line(self, text: str) -> Any:
        """The record of one physical line that holds exactly one record (no newline in a quoted field)."""
        try:
            row = next(csv.reader([text], strict=True))
        except csv.Error as exc:
            return RowError(f"{self.where}: the row is not valid CSV ({exc})")
        return self.record(row, text)

    def record(self, row: list[str], text: str) -> Any:
        where, header, width = self.where, self.header, self.width
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
                if i in self.strings:
                    if quoted is None:
                        quoted = quoted_empty_fields(text)
                    record[name] = "" if i in quoted else None
                else:
                    record[name] = None
                continue
            try:
                record[name] = self.convert[i](cell)
            except CellError as exc:
                return RowError(f"{where}, feature {name!r} ({self.defs[i].describe()}): value {_short(cell)} is "
                                f"invalid: {exc}", name)
        return record


class CsvReader:
    """The rows of an open CSV file, one at a time, after its header (read on construction).

    ``streams.datafiles.blocks`` reads blocks of the same file around it: ``resume(lines_before)``
    says the file was moved (``f.seek``) to the start of a line with that many lines before it."""

    def __init__(self, f: BinaryIO, path: Path, group: FeatureGroup) -> None:
        if csv.field_size_limit() < FIELD_LIMIT:
            csv.field_size_limit(FIELD_LIMIT)
        self._f = f
        self._lines = _Lines(bounded_lines(f))
        self._reader = csv.reader(self._lines, strict=True)
        self.header = _header(self._reader, self._lines, path, group)
        self.parser = CsvRowParser(group, self.header)

    @property
    def lines_read(self) -> int:
        return self._lines.count

    def resume(self, lines_before: int) -> None:
        self._lines.restart(bounded_lines(self._f, strip_bom=False), lines_before)

    def __iter__(self) -> CsvReader:
        return self

    def __next__(self) -> tuple[int, Any, str]:
        lines = self._lines
        while True:
            first = lines.count + 1
            try:
                row = next(self._reader)
            except csv.Error as exc:
                return first, RowError(f"{self.parser.where}: the row is not valid CSV ({exc})"), lines.take()
            except _LineTooLong:
                lines.take()
                return first, RowError(f"{self.parser.where}: the line is longer than {LINE_LIMIT} bytes; a record "
                                       "is at most 350 KB"), ""
            text = lines.take()
            if not row:
                continue  # a blank line holds no record
            return first, self.parser.record(row, text), text


def _short(text: str, limit: int = 80) -> str:
    return repr(text) if len(text) <= limit else f"{text[:limit]!r}... ({len(text)} chars)"
