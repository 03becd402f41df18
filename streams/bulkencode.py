"""A DataFrame or Arrow part encoded in bulk: columns to messages, the per-record path only for the rest.

The part becomes Arrow columns as ``streams.rowsource`` reads it row by row (pandas' missing markers are
no value, datetimes are ISO-8601 UTC text), ``schemas.column_encoder`` encodes every row it proves valid,
and the rows it does not prove go through ``streams.encoding.encode_rows``, the per-record path, which
accepts them or rejects them with today's reason. Output: the same EncodedChunk, byte for byte, with
the same rejections, as the per-record path gives for the whole part (tests/unit/test_bulk_encode.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from schemas.column_checks import one_array, valid_mask
from schemas.column_encoder import compile_column_encoder
from schemas.errors import ValidationError
from schemas.validate import RecordValidator
from schemas.wire import check_message_size
from streams.datafiles.blocks import TextBlock, block_columns, block_records
from streams.encoding import SIZE_CHECK_FROM, EncodedChunk, Rejection, encode_rows
from streams.rowsource import Chunk, datetimes_to_iso, part_to_chunk, timestamps_to_iso

log = logging.getLogger(__name__)
# Below this many rows the per-record path is as fast as setting up the columns.
MIN_BULK_ROWS = 1


def encode_part(validator: RecordValidator, start: int, part: Any, *, target_stores: Iterable[str] | None = None,
                ttl_seconds: int | None = None, api_invocation_time_ns: int = 0) -> EncodedChunk:
    """Validate and encode one part from ``rowsource.iter_parts`` (bulk for DataFrames, Arrow, and the
    CSV / JSON Lines blocks of ``streams.datafiles.blocks``)."""
    options = {"target_stores": target_stores, "ttl_seconds": ttl_seconds,
               "api_invocation_time_ns": api_invocation_time_ns}
    if isinstance(part, TextBlock):
        return _encode_text_block(validator, start, part, options)
    mod = type(part).__module__
    table = unsure = None
    if len(part) >= MIN_BULK_ROWS:
        if mod.startswith("pandas"):
            table, unsure = frame_columns(part)
        elif mod.startswith("pyarrow"):
            table, unsure = arrow_columns(part)
    if table is None:
        return encode_rows(validator, part_to_chunk(start, part), **options)
    return _encode_table(validator, start, table, unsure, options,
                         lambda first, positions: part_to_chunk(first, _rows(part, positions)))


def _encode_text_block(validator: RecordValidator, start: int, block: TextBlock,
                       options: dict[str, Any]) -> EncodedChunk:
    """A CSV / JSON Lines block: Arrow's columns where certain, each other line read as the row path reads it."""
    group = validator.group
    read = block_columns(block, group)

    def rows_of(first: int, positions: list[int]) -> Chunk:
        return first, (), block_records(block, group, positions)

    if read is None:
        return encode_rows(validator, rows_of(start, list(range(block.rows))), **options)
    table, unsure = read
    return _encode_table(validator, start, table, unsure, options, rows_of)


def frame_columns(frame: Any) -> tuple[Any, np.ndarray | None]:
    """(Arrow table, rows whose conversion is not certain) of a DataFrame; (None, None) when a column
    does not convert (mixed objects, ...): then the part goes per record."""
    import pandas as pd
    import pyarrow as pa

    names = [str(c) for c in frame.columns]
    arrays = []
    unsure = np.zeros(len(frame), dtype=bool)
    for col in frame.columns:
        s = frame[col]
        if isinstance(s, pd.DataFrame):  # a duplicated column label
            return None, None
        try:
            if pd.api.types.is_datetime64_any_dtype(s.dtype):
                arr = pa.array(datetimes_to_iso(s), pa.string())
            else:
                arr = _plain(pa.array(s, from_pandas=True))
        except (pa.ArrowException, TypeError, ValueError, OverflowError):
            return None, None
        # The row path takes pandas' own missing markers; a row where Arrow's nulls disagree goes there.
        unsure |= s.isna().to_numpy(dtype=bool) != ~valid_mask(arr)
        arrays.append(arr)
    return pa.Table.from_arrays(arrays, names=names), unsure


def arrow_columns(part: Any) -> tuple[Any, np.ndarray | None]:
    import pyarrow as pa

    arrays = []
    for col in part.columns:
        col = one_array(col)
        if pa.types.is_timestamp(col.type):
            col = pa.array(timestamps_to_iso(col), pa.string())
        arrays.append(_plain(col))
    return pa.Table.from_arrays(arrays, names=list(part.column_names)), None


def _plain(arr: Any) -> Any:
    """Dictionary-encoded and view strings as plain arrays (what their values are, read row by row)."""
    import pyarrow as pa

    arr = one_array(arr)
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    if pa.types.is_string_view(arr.type):
        arr = arr.cast(pa.large_string())
    return arr


def _encode_table(validator: RecordValidator, start: int, table: Any, unsure: np.ndarray | None,
                  options: dict[str, Any], rows_of: Callable[[int, list[int]], Chunk]) -> EncodedChunk:
    """``rows_of(first index, positions)``: the chunk the per-record path reads for those rows of the part."""
    n = table.num_rows
    group = validator.group
    stores = options["target_stores"]
    try:
        resolved = group.enabled_stores if stores is None else validator.target_stores(stores)
    except ValidationError:
        resolved = None  # every row is rejected with the reason, per record
    bulk = None
    if resolved is not None:
        bulk = compile_column_encoder(group).encode(table, target_stores=resolved,
                                                    ttl_seconds=options["ttl_seconds"])
    done = np.zeros(n, dtype=bool)
    if bulk is not None and len(bulk.done):
        done[bulk.done] = True
        if unsure is not None:
            done &= ~unsure
    headers = None
    if done.any():
        # The first bulk row also goes through the per-record path: it checks the call's options (TTL,
        # api time), gives the headers every record of the call shares, and proves the two encoders agree.
        first = int(np.flatnonzero(done)[0])
        reference = encode_rows(validator, rows_of(start + first, [first]), **options)
        position = int(np.searchsorted(bulk.done, first))
        if reference.keys != [bulk.keys[position]] or reference.values != [bulk.values[position]]:
            if not reference.rejects:
                log.error("bulk encoding of group %r disagrees with the per-record encoder on row %d; "
                          "encoding this part per record", group.name, start + first)
            done[:] = False
        else:
            headers = reference.headers
    slow = np.flatnonzero(~done)
    rest = EncodedChunk([], [], None, [], 0, [])
    if len(slow):
        rest = encode_rows(validator, rows_of(start, slow.tolist()), **options,
                           indexes=(slow + start).tolist())
    if not done.any():
        return EncodedChunk(rest.keys, rest.values, rest.headers, rest.rejects, n, rest.indexes)
    keep = done[bulk.done]
    if keep.all():  # the common case: every row the bulk encoder proved is kept
        keys, values = bulk.keys, bulk.values
    else:
        keys = [k for k, d in zip(bulk.keys, keep.tolist(), strict=True) if d]
        values = [v for v, d in zip(bulk.values, keep.tolist(), strict=True) if d]
    indexes = (bulk.done[keep] + start).tolist()
    rejects = list(rest.rejects)
    keys, values, indexes = _check_sizes(group.name, keys, values, indexes, headers, rejects)
    if rest.keys:
        keys, values, indexes = _merge((keys, values, indexes), (rest.keys, rest.values, rest.indexes))
    rejects.sort(key=lambda r: r.index)
    return EncodedChunk(keys, values, headers or rest.headers, rejects, n, indexes)


def _rows(part: Any, positions: list[int]) -> Any:
    """The rows at ``positions`` of a part, in the part's own type."""
    if type(part).__module__.startswith("pandas"):
        return part.iloc[positions]
    import pyarrow as pa

    return part.take(pa.array(positions, pa.int64()))


def _check_sizes(group: str, keys: list[bytes], values: list[bytes], indexes: list[int], headers: Any,
                 rejects: list[Rejection]) -> tuple[list[bytes], list[bytes], list[int]]:
    """The door's message size limit, for the rare value near it (as the per-record path checks it)."""
    big = [i for i, v in enumerate(values) if len(v) > SIZE_CHECK_FROM]
    if not big:
        return keys, values, indexes
    drop = set()
    for i in big:
        try:
            check_message_size(keys[i], values[i], headers, record_id=keys[i].decode("utf-8"), group=group)
        except ValidationError as exc:
            rejects.append(Rejection(indexes[i], str(exc), exc.feature))
            drop.add(i)
    keep = [i for i in range(len(keys)) if i not in drop]
    return [keys[i] for i in keep], [values[i] for i in keep], [indexes[i] for i in keep]


def _merge(a: tuple[list[bytes], list[bytes], list[int]], b: tuple[list[bytes], list[bytes], list[int]],
           ) -> tuple[list[bytes], list[bytes], list[int]]:
    """Two encoded row sets, each in row order, as one in row order (per-key order is row order)."""
    rows = sorted(zip(a[2] + b[2], a[0] + b[0], a[1] + b[1], strict=True), key=lambda r: r[0])
    return [r[1] for r in rows], [r[2] for r in rows], [r[0] for r in rows]

