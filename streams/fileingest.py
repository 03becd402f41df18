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
from streams.ingest import IngestIncompleteError, IngestResult, ingest
from streams.publisher import Publisher


def ingest_file(publisher: Publisher, topic: str, group: FeatureGroup, path: str | Path, *, fmt: str | None = None,
                strict: bool = False, max_workers: int | None = None, progress: bool = True,
                target_stores: Sequence[str] | None = None, ttl_seconds: int | None = None,
                only: set[int] | None = None, resume_token: int | None = None) -> tuple[IngestResult, FileRows]:
    """Publish the valid rows of ``path``; rejections carry their ``line``. Returns the rows too,
    so a caller can re-read the rejected ones (``FileRows.rows_at``).

    ``only`` + ``resume_token``: resume an ingest of this file that Kafka did not fully acknowledge
    (``streams.resume``): publish only the rows at those indexes, skipping any the broker kept.
    Raises IngestIncompleteError (with ``.rows``) when Kafka does not acknowledge every valid row;
    every index in the result, rejected or unacknowledged, is a row index of the file.
    """
    rows = FileRows(path, group, fmt)
    options = dict(max_workers=max_workers, progress=progress, target_stores=target_stores,
                   ttl_seconds=ttl_seconds)
    if only is not None:
        return _resume(publisher, topic, group, rows, only, resume_token, options), rows
    if strict:
        before = rows.identity()
        checked = ingest(publisher, topic, group, rows, strict=True, validate_only=True, **options)
        if checked.rejected:
            return _with_lines(checked, rows), rows
        if rows.identity() != before:
            raise DataFileError(f"{str(rows.path)!r} changed while it was being validated; nothing was "
                                "published (strict mode): run the ingest again", group=group.name)
    try:
        result = ingest(publisher, topic, group, rows, **options)
    except IngestIncompleteError as exc:
        _with_lines(exc.result, rows)
        exc.rows = rows
        raise
    result.strict = strict
    return _with_lines(result, rows), rows


def _resume(publisher: Publisher, topic: str, group: FeatureGroup, rows: FileRows, only: set[int],
            resume_token: int | None, options: dict) -> IngestResult:
    found = list(rows.rows_at(only))  # only the named rows: the file is read, not held
    missing = only - {index for index, _, _ in found}
    if missing:
        raise DataFileError(f"{str(rows.path)!r} has no row {min(missing)} (of {len(only)} rows to resume): is "
                            "this the file the --rejects file was written for?", group=group.name)
    file_index = [index for index, _, _ in found]
    records = [record for _, record, _ in found]
    try:
        result = ingest(publisher, topic, group, records, resume_token=resume_token, **options)
    except IngestIncompleteError as exc:
        _to_file_indexes(exc.result, file_index)
        exc.rows = rows
        raise
    return _to_file_indexes(result, file_index)


def _to_file_indexes(result: IngestResult, file_index: list[int]) -> IngestResult:
    result.rejected = [replace(r, index=file_index[r.index]) for r in result.rejected]
    result.unacknowledged = [replace(r, index=file_index[r.index]) for r in result.unacknowledged]
    return result


def _with_lines(result: IngestResult, rows: FileRows) -> IngestResult:
    result.rejected = [replace(r, line=rows.line_of(r.index)) for r in result.rejected]
    result.unacknowledged = [replace(r, line=rows.line_of(r.index)) for r in result.unacknowledged]
    return result
