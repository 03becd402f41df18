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
from itertools import islice
from typing import Any

from schemas.eventtime import format_iso

Chunk = tuple[int, tuple[str, ...], list[tuple[Any, ...]]]


def count_rows(data: object) -> int | None:
    """Row count when known without consuming the data (for progress bars)."""
    try:
        return len(data)  # type: ignore[arg-type]
    except TypeError:
        return None


def iter_chunks(data: object, chunk_size: int = 10_000) -> Iterator[Chunk]:
    """Yield row chunks from a DataFrame, an Arrow table/record batch or an iterable of dicts."""
    mod = type(data).__module__
    if mod.startswith("pandas"):
        yield from _frame_chunks(data, chunk_size)
    elif mod.startswith("pyarrow"):
        yield from _arrow_chunks(data, chunk_size)
    elif isinstance(data, Mapping):
        raise TypeError("ingest takes many records (a DataFrame, an Arrow table or an iterable of dicts), "
                        "not one dict; use put_record for a single record")
    elif isinstance(data, Iterable) and not isinstance(data, str | bytes):
        yield from _dict_chunks(data, chunk_size)
    else:
        raise TypeError(f"ingest takes a pandas DataFrame, a pyarrow Table or an iterable of dicts, "
                        f"not {type(data).__name__}")


def _frame_chunks(df: Any, chunk_size: int) -> Iterator[Chunk]:
    import pandas as pd

    names = tuple(str(c) for c in df.columns)
    for start in range(0, len(df), chunk_size):
        part = df.iloc[start:start + chunk_size]
        columns = []
        for col in part.columns:
            s = part[col]
            if pd.api.types.is_datetime64_any_dtype(s.dtype):
                columns.append(_datetimes_to_iso(s))
            elif pd.api.types.is_float_dtype(s.dtype) or s.dtype == object:
                values = s.tolist()
                mask = s.isna().tolist()
                columns.append([None if m else v for v, m in zip(values, mask, strict=True)])
            else:
                # ints, bools, strings with an NA-capable dtype
                mask = s.isna().tolist() if s.hasnans else None
                values = s.tolist()
                columns.append(values if mask is None else [None if m else v for v, m in zip(values, mask,
                                                                                            strict=True)])
        yield start, names, list(zip(*columns, strict=True)) if columns else [() for _ in range(len(part))]


def _datetimes_to_iso(s: Any) -> list[str | None]:
    if getattr(s.dt, "tz", None) is None:
        s = s.dt.tz_localize("UTC")  # naive datetimes are taken as UTC, as schemas.infer documents
    # pandas may hold datetimes in s/ms/us/ns units: normalise to ns before taking integers.
    ns = s.dt.tz_convert("UTC").dt.as_unit("ns").astype("int64").tolist()
    mask = s.isna().tolist()
    return [None if m else format_iso(v) for v, m in zip(ns, mask, strict=True)]


def _arrow_chunks(table: Any, chunk_size: int) -> Iterator[Chunk]:
    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(table, pa.RecordBatch):
        table = pa.Table.from_batches([table])
    names = tuple(table.column_names)
    for start in range(0, table.num_rows, chunk_size):
        part = table.slice(start, chunk_size)
        columns = []
        for col in part.columns:
            if pa.types.is_timestamp(col.type):
                ints = pc.cast(col, pa.timestamp("ns", tz=col.type.tz)).cast(pa.int64()).to_pylist()
                columns.append([None if v is None else format_iso(v) for v in ints])
            else:
                columns.append(col.to_pylist())
        yield start, names, list(zip(*columns, strict=True)) if columns else [() for _ in range(part.num_rows)]


def _dict_chunks(records: Iterable[Any], chunk_size: int) -> Iterator[Chunk]:
    it = iter(records)
    start = 0
    while True:
        batch = list(islice(it, chunk_size))
        if not batch:
            return
        # Dicts may differ in keys, so each row keeps its own mapping (names = ()).
        yield start, (), batch  # type: ignore[misc]
        start += len(batch)
