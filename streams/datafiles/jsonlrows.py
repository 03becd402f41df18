"""JSON Lines files, read with the group's schema: one record (or one reason) per line.

Each line is parsed on its own (orjson: correctly rounded doubles, exact 64-bit integers; the
stdlib parser with Decimals where orjson cannot be exact, see ``cells.loads_exact``), so a bad
line rejects that line only. Blank lines hold no record.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from schemas.group import FeatureGroup
from streams.datafiles.cells import CellError, RecordReader
from streams.datafiles.lines import LINE_LIMIT, bounded_lines
from streams.rowsource import RowError


def jsonl_records(path: Path, group: FeatureGroup) -> Iterator[tuple[int, Any, bytes]]:
    """``(line, record or RowError, the line's bytes)`` for every non-blank line of the file."""
    reader = RecordReader.for_group(group)
    where = f"feature group {group.name!r}"
    with path.open("rb") as f:
        for number, raw in enumerate(bounded_lines(f), 1):
            if raw is None:
                yield number, RowError(f"{where}: the line is longer than {LINE_LIMIT} bytes; a record is at "
                                       "most 350 KB"), b""
                continue
            if not raw.strip():
                continue
            yield number, jsonl_record(reader, where, raw), raw


def jsonl_record(reader: RecordReader, where: str, raw: bytes) -> Any:
    """The record of one line, or the RowError that rejects it (also what a bulk block's leftover lines
    go through, ``streams.datafiles.blocks``)."""
    try:
        return reader.loads(raw)
    except CellError as exc:
        return RowError(f"{where}: the line is invalid: {exc}", exc.feature)
