"""A data file as the records ``ingest`` takes, read with the group's schema, in bounded memory.

``FileRows`` is re-iterable (each pass reads the file again, a record at a time), yields a dict
per row or a RowError for a row that cannot be read, and remembers each row's line number as
it goes, so rejections can name the line a user would open.
"""

from __future__ import annotations

import os
from bisect import bisect_right
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from schemas.group import FeatureGroup
from streams.datafiles.blocks import TextBlock, split_text
from streams.datafiles.csvrows import check_csv_header, csv_records
from streams.datafiles.formats import check_path, detect_format
from streams.datafiles.jsonlrows import jsonl_records
from streams.datafiles.parquetrows import check_parquet_columns, parquet_batches, parquet_records

_READERS: dict[str, Callable[[Path, FeatureGroup], Iterator[tuple[int, Any, Any]]]] = {
    "csv": csv_records, "jsonl": jsonl_records, "parquet": parquet_records}


class FileRows:
    """The rows of one CSV, JSON Lines or Parquet file for ``group``; header problems raise here."""

    def __init__(self, path: str | Path, group: FeatureGroup, fmt: str | None = None) -> None:
        self.path = check_path(path)
        self.group = group
        self.format = detect_format(self.path, fmt)
        self.unit = "row" if self.format == "parquet" else "line"
        # Parquet parts come as Arrow columns: nothing to parse, so a worker pool has little to take
        # off the caller's hands (streams.ingest chooses the workers by it).
        self.columnar = self.format == "parquet"
        if self.format == "csv":
            check_csv_header(self.path, group)
        elif self.format == "parquet":
            check_parquet_columns(self.path, group)
        # Row index -> line, stored only where the gap changes (blank lines, records spanning
        # lines), so a 20M-row file with one line per record keeps one entry, not 20M.
        self._starts: list[int] = [0]
        self._offsets: list[int] = [1]

    def identity(self) -> tuple[int, int, int]:
        """(inode, size, mtime): a strict ingest reads the file twice and checks it did not change."""
        st = os.stat(self.path)
        return st.st_ino, st.st_size, st.st_mtime_ns

    def __iter__(self) -> Iterator[Any]:
        starts: list[int] = [0]
        offsets: list[int] = [1]
        offset = 1
        for index, (line, record, _text) in enumerate(_READERS[self.format](self.path, self.group)):
            if line - index != offset:
                offset = line - index
                starts.append(index)
                offsets.append(offset)
                self._starts, self._offsets = starts, offsets
            yield record
        self._starts, self._offsets = starts, offsets

    def iter_parts(self, chunk_size: int) -> Iterator[tuple[int, Any]]:
        """``(first row index, part)`` for ``streams.rowsource.iter_parts``: a Parquet file as Arrow
        batches (encoded in bulk, row ``i`` is row ``i + 1`` of the file); a text file as TextBlocks
        (read by Arrow in bulk, ``streams.datafiles.blocks``) and, where a block is not plain, lists of
        the records read row by row."""
        if self.format == "parquet":
            yield from parquet_batches(self.path, self.group, chunk_size)
            return
        starts: list[int] = [0]
        offsets: list[int] = [1]
        start = 0
        batch: list[Any] = []  # rows read one by one, between blocks

        def note(index: int, line: int) -> None:
            if line - index != offsets[-1]:
                starts.append(index)
                offsets.append(line - index)
                self._starts, self._offsets = starts, offsets

        for line, item in split_text(self.path, self.group, self.format):
            if isinstance(item, TextBlock):
                if batch:
                    yield start, batch
                    start += len(batch)
                    batch = []
                note(start, line)  # a block is one record per line: its rows need no more entries
                yield start, item
                start += item.rows
                continue
            note(start + len(batch), line)
            batch.append(item)
            if len(batch) >= chunk_size:
                yield start, batch
                start += len(batch)
                batch = []
        if batch:
            yield start, batch
        self._starts, self._offsets = starts, offsets

    def line_of(self, index: int) -> int:
        """The line (CSV, JSON Lines; from 1) or row (Parquet; from 1) where row ``index`` starts."""
        return index + self._offsets[bisect_right(self._starts, index) - 1]

    def rows_at(self, indexes: set[int]) -> Iterator[tuple[int, Any, str | None]]:
        """``(index, record or None, its text in the file)`` for the rows at ``indexes`` (a re-read)."""
        if not indexes:
            return
        last = max(indexes)
        for index, (_line, record, text) in enumerate(_READERS[self.format](self.path, self.group)):
            if index in indexes:
                if isinstance(text, bytes):
                    text = text.decode("utf-8", "replace")
                yield index, (record if isinstance(record, dict) else None), text
            if index >= last:
                return
