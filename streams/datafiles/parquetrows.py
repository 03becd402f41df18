"""Parquet files, read with the types they were written with: one record per row, exactly.

Arrow hands each value back as the Python value it holds (int64 as int, nulls as None, never
through float64, as pandas' ``to_pandas`` would for a nullable integer column); the validator
then checks it against the group. Batches keep memory bounded by the row group size.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from schemas.group import FeatureGroup
from streams.datafiles.columns import check_columns
from streams.datafiles.formats import DataFileError
from streams.rowsource import part_to_chunk

BATCH_ROWS = 5_000


def _open(path: Path, group: FeatureGroup) -> Any:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, ... for a file that is not Parquet
        raise DataFileError(f"cannot read {str(path)!r} as parquet: {type(exc).__name__}: {exc}",
                            group=group.name) from exc
    check_columns(group, pf.schema_arrow.names, path, what="schema")
    return pf


def check_parquet_columns(path: Path, group: FeatureGroup) -> None:
    _open(path, group)


def parquet_batches(path: Path, group: FeatureGroup, batch_rows: int = BATCH_ROWS) -> Iterator[tuple[int, Any]]:
    """``(index of its first row, Arrow record batch)`` for the whole file: what ingest encodes in bulk
    (``streams.bulkencode``); row ``index`` is the file's row ``index + 1``."""
    pf = _open(path, group)
    start = 0
    try:
        for batch in pf.iter_batches(batch_size=batch_rows):
            yield start, batch
            start += batch.num_rows
    except OSError as exc:  # a corrupt page: the rows before it are already read
        raise DataFileError(f"cannot read {str(path)!r} as parquet after row {start}: {exc}",
                            group=group.name) from exc


def parquet_records(path: Path, group: FeatureGroup) -> Iterator[tuple[int, Any, None]]:
    """``(row number from 1, record, None)`` for every row of the file."""
    for start, batch in parquet_batches(path, group):
        _, names, rows = part_to_chunk(start, batch)
        for i, row in enumerate(rows):
            yield start + i + 1, dict(zip(names, row, strict=True)), None
