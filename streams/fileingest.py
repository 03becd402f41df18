"""Ingesting a data file: read with the group's schema, every row either published or rejected
with its line and reason, in bounded memory (the file is read a chunk at a time).

``--strict`` must publish nothing if any row is invalid, yet may not hold a whole file's records
until it knows: it reads the file twice, first only validating, then publishing, and refuses to
publish if the file changed in between.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from schemas.group import FeatureGroup
from streams.datafiles import DataFileError, FileRows
from streams.ingest import IngestResult, ingest
from streams.publisher import Publisher


def ingest_file(publisher: Publisher, topic: str, group: FeatureGroup, path: str | Path, *, fmt: str | None = None,
                strict: bool = False, max_workers: int | None = None, progress: bool = True,
                target_stores: Sequence[str] | None = None, ttl_seconds: int | None = None,
                ) -> tuple[IngestResult, FileRows]:
    """Publish the valid rows of ``path``; rejections carry their ``line``. Returns the rows too,
    so a caller can re-read the rejected ones (``FileRows.rows_at``)."""
    rows = FileRows(path, group, fmt)
    options = dict(max_workers=max_workers, progress=progress, target_stores=target_stores,
                   ttl_seconds=ttl_seconds)
    if strict:
        before = rows.identity()
        checked = ingest(publisher, topic, group, rows, strict=True, validate_only=True, **options)
        if checked.rejected:
            return _with_lines(checked, rows), rows
        if rows.identity() != before:
            raise DataFileError(f"{str(rows.path)!r} changed while it was being validated; nothing was "
                                "published (strict mode): run the ingest again", group=group.name)
    result = ingest(publisher, topic, group, rows, **options)
    result.strict = strict
    return _with_lines(result, rows), rows


def _with_lines(result: IngestResult, rows: FileRows) -> IngestResult:
    result.rejected = [replace(r, line=rows.line_of(r.index)) for r in result.rejected]
    return result
