"""Turn what users ingest (pandas DataFrame, Arrow table, iterable of dicts) into row chunks.

A chunk is ``(first_row_index, column_names, rows)`` with rows as tuples of plain Python
values, which is the cheapest shape to validate and to send to worker processes.

Missing values: in a DataFrame, pandas' NA markers (NaN, None, NaT, pd.NA) mean "no value"
(as in the reference SDK, which skips them), so they become None. In an Arrow table or a
dict, a null is None and a float NaN stays NaN, which validation rejects: there NaN is a
value, and not a valid one. Datetime columns become ISO-8601 UTC strings.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from itertools import islice
from typing import Any

from schemas.eventtime import format_iso

Chunk = tuple[int, tuple[str, ...], list[tuple[Any, ...]]]


@dataclass(frozen=True)
class RowError:
    """A row that could not even be read into a record (bad JSON, a ragged CSV row, invalid UTF-8...).

    File readers (``streams.datafiles``) yield one in place of the record, so that ingest rejects
    that row with this reason and publishes the rest, instead of the whole file failing.
    """

    reason: str
    feature: str | None = None


def count_rows(data: object) -> int | None:
    """Row count when known without consuming the data (for progress bars)."""
    try:
        return len(data)  # type: ignore[arg-type]
    except TypeError:
        return None


def iter_chunks(data: object, chunk_size: int = 10_000) -> Iterator[Chunk]:
    """Yield row chunks from a DataFrame, an Arrow table/record batch or an iterable of dicts."""
    for start, part in iter_parts(data, chunk_size):
        yield part_to_chunk(start, part)


def iter_parts(data: object, chunk_size: int = 10_000) -> Iterator[tuple[int, Any]]:
    """Yield ``(first_row_index, part)``: slices of ``data`` in its own type, not yet converted.

    ``ingest`` ships these to worker processes, which run :func:`part_to_chunk` themselves:
    a DataFrame slice pickles as whole numpy columns, about 4x cheaper than its rows as tuples
    (measured in bench/publish.py's breakdown), and the conversion's CPU moves off the
    process that feeds the producer.
    """
    own = getattr(data, "iter_parts", None)
    if callable(own):  # a source that knows its best parts (streams.datafiles.FileRows: Parquet batches)
        yield from own(chunk_size)
        return
    mod = type(data).__module__
    if mod.startswith("pandas"):
        for start in range(0, len(data), chunk_size):  # type: ignore[arg-type]
            yield start, data.iloc[start:start + chunk_size]  # type: ignore[attr-defined]
    elif mod.startswith("pyarrow"):
        import pyarrow as pa

        table = pa.Table.from_batches([data]) if isinstance(data, pa.RecordBatch) else data
        for start in range(0, table.num_rows, chunk_size):  # type: ignore[attr-defined]
            yield start, table.slice(start, chunk_size)  # type: ignore[attr-defined]
    elif isinstance(data, Mapping):
        raise TypeError("ingest takes many records (a DataFrame, an Arrow table or an iterable of dicts), "
                        "not one dict; use put_record for a single record")
    elif isinstance(data, Iterable) and not isinstance(data, str | bytes):
        it = iter(data)
        start = 0
        while batch := list(islice(it, chunk_size)):
            yield start, batch
            start += len(batch)
    else:
        raise TypeError(f"ingest takes a pandas DataFrame, a pyarrow Table or an iterable of dicts, "
                        f"not {type(data).__name__}")


def compact_part(part: Any) -> Any:
    """``part`` ready to pickle to a worker: an Arrow slice pickles its parent's whole buffers
    (a 5,000-row slice of a 200k-row table: 7.8 MB, the size of the table), so it is copied out
    first; other parts are returned as they are."""
    if type(part).__module__.startswith("pyarrow") and hasattr(part, "take") \
            and part.get_total_buffer_size() > 2 * part.nbytes:  # a slice of something bigger
        import numpy as np

        return part.take(np.arange(len(part)))
    return part


def part_to_chunk(start: int, part: Any) -> Chunk:
    """Convert one part from :func:`iter_parts` into a chunk of plain Python values."""
    own = getattr(part, "to_chunk", None)
    if callable(own):  # a source's own part (streams.datafiles.blocks.TextBlock)
        return own(start)
    mod = type(part).__module__
    if mod.startswith("pandas"):
        return _frame_chunk(start, part)
    if mod.startswith("pyarrow"):
        return _arrow_chunk(start, part)
    # Dicts may differ in keys, so each row keeps its own mapping (names = ()).
    return start, (), part


def _frame_chunk(start: int, part: Any) -> Chunk:
    import pandas as pd

    names = tuple(str(c) for c in part.columns)
    columns = []
    for col in part.columns:
        s = part[col]
        if pd.api.types.is_datetime64_any_dtype(s.dtype):
            columns.append(datetimes_to_iso(s))
            continue
        values = s.tolist()
        # One vectorised NA test per column; the per-value pass runs only for columns that
        # have a missing value (most columns of most frames have none).
        na = s.isna().to_numpy()
        if na.any():
            values = [None if m else v for v, m in zip(values, na.tolist(), strict=True)]
        columns.append(values)
    return start, names, list(zip(*columns, strict=True)) if columns else [() for _ in range(len(part))]


def datetimes_to_iso(s: Any) -> list[str | None]:
    """A pandas datetime Series as ISO-8601 UTC texts (None where missing)."""
    if getattr(s.dt, "tz", None) is None:
        s = s.dt.tz_localize("UTC")  # naive datetimes are taken as UTC, as schemas.infer documents
    # pandas may hold datetimes in s/ms/us/ns units: normalise to ns before taking integers.
    ns = s.dt.tz_convert("UTC").dt.as_unit("ns").astype("int64").tolist()
    mask = s.isna().tolist()
    return [None if m else format_iso(v) for v, m in zip(ns, mask, strict=True)]


def timestamps_to_iso(col: Any) -> list[str | None]:
    """An Arrow timestamp column as ISO-8601 UTC texts (None where null)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    ints = pc.cast(col, pa.timestamp("ns", tz=col.type.tz)).cast(pa.int64()).to_pylist()
    return [None if v is None else format_iso(v) for v in ints]


def _arrow_chunk(start: int, part: Any) -> Chunk:
    import pyarrow as pa

    names = tuple(part.column_names)
    columns = []
    for col in part.columns:
        if pa.types.is_timestamp(col.type):
            columns.append(timestamps_to_iso(col))
        else:
            columns.append(col.to_pylist())
    return start, names, list(zip(*columns, strict=True)) if columns else [() for _ in range(part.num_rows)]
