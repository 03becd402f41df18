"""Physical lines of a data file, with bounded memory, and where a record's fields start and end."""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO

BOM = b"\xef\xbb\xbf"
# A record is at most 350 KB of values; escaping and JSON punctuation can grow its text a few
# times. A longer line is rejected without being held whole, so one runaway line (a missing
# newline, a binary file) cannot take the memory a 2 GB file would.
LINE_LIMIT = 8 * 1024 * 1024


def bounded_lines(f: BinaryIO, limit: int = LINE_LIMIT, *, strip_bom: bool = True) -> Iterator[bytes | None]:
    """Each line of ``f`` (with its line end), None for a line longer than ``limit``; a UTF-8 BOM
    at the start of the file is dropped (spreadsheets write one). ``strip_bom=False``: ``f`` is
    somewhere after its start, where a BOM is not one."""
    first = strip_bom
    while True:
        raw = f.readline(limit)
        if not raw:
            return
        if first:
            first = False
            if raw.startswith(BOM):
                raw = raw[len(BOM):]
        if len(raw) >= limit and not raw.endswith(b"\n"):
            while (rest := f.readline(limit)) and not rest.endswith(b"\n"):
                pass
            yield None
            continue
        yield raw


def quoted_empty_fields(text: str, delimiter: str = ",", quote: str = '"') -> set[int]:
    """Indexes of the fields of one CSV record written as ``""``.

    Python's csv module (before 3.12) reads ``""`` and an empty field alike; the difference is
    an empty string versus no value. Called only for records that have an empty String cell.
    """
    out: set[int] = set()
    field, i, n = 0, 0, len(text)
    at_start = True
    while i < n:
        c = text[i]
        if c == quote and at_start:
            j, empty = i + 1, True
            while j < n:
                if text[j] == quote:
                    if j + 1 < n and text[j + 1] == quote:
                        j, empty = j + 2, False
                        continue
                    break
                j, empty = j + 1, False
            if empty and j < n and (j + 1 == n or text[j + 1] in (delimiter, "\r", "\n")):
                out.add(field)
            i, at_start = j + 1, False
            continue
        if c == delimiter:
            field, at_start = field + 1, True
        elif c in "\r\n":
            break
        else:
            at_start = False
        i += 1
    return out
