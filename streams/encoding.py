"""One chunk of rows validated and encoded record by record: the reference path of ingest.

Every row that ``streams.bulkencode`` cannot prove valid in bulk comes here, and so does every
chunk of dicts: this is where rejections and their reasons are written, once.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from typing import Any

from schemas.errors import ValidationError
from schemas.names import MAX_MESSAGE_BYTES
from schemas.validate import RecordValidator
from schemas.wire import check_message_size, encode_headers, encode_value
from streams.rowsource import Chunk, RowError

Encoded = tuple[bytes, bytes, list[tuple[str, bytes]]]


@dataclass(frozen=True)
class Rejection:
    """One row that was not published, and why."""

    index: int
    reason: str
    feature: str | None = None
    line: int | None = None  # set for rows read from a file: its line (CSV, JSON Lines) or row (Parquet)

    def to_dict(self) -> dict[str, Any]:
        out = {"index": self.index, "feature": self.feature, "reason": self.reason}
        if self.line is not None:
            out["line"] = self.line
        return out




@dataclass
class EncodedChunk:
    """One chunk's outcome in the cheapest shape to pickle and to produce.

    ``keys`` and ``values`` are parallel lists; every record of one ``ingest`` call shares its
    headers (same schema version, same api_invocation_time), so they are built once per chunk
    instead of once per record: that alone was ~3 µs of a ~15 µs per-record budget.
    """

    keys: list[bytes]
    values: list[bytes]
    headers: list[tuple[str, bytes]] | None
    rejects: list[Rejection]
    rows: int
    indexes: list[int] = field(default_factory=list)  # the row index of each encoded record

    def records(self) -> Iterator[Encoded]:
        return zip(self.keys, self.values, repeat(self.headers))  # type: ignore[arg-type]




# Below this value size a message cannot pass MAX_MESSAGE_BYTES (the key is at most 2 KiB, the
# headers and framing a few hundred bytes), so the hot path skips the exact count.
SIZE_CHECK_FROM = MAX_MESSAGE_BYTES - 4096


def encode_rows(validator: RecordValidator, chunk: Chunk, *, target_stores: Iterable[str] | None = None,
                ttl_seconds: int | None = None, api_invocation_time_ns: int = 0,
                indexes: Sequence[int] | None = None) -> EncodedChunk:
    """Validate and encode every row of ``chunk``; invalid rows become Rejections (never an exception).

    ``indexes``: the row index of each row when they are not consecutive from the chunk's start
    (the rows of a bulk chunk that bulk encoding left to this path)."""
    start, names, rows = chunk
    where = indexes if indexes is not None else range(start, start + len(rows))
    validate = validator.validate
    keys: list[bytes] = []
    values: list[bytes] = []
    done: list[int] = []
    rejects: list[Rejection] = []
    headers: list[tuple[str, bytes]] | None = None
    if names:
        records: Iterable[Any] = (dict(zip(names, row, strict=True)) for row in rows)
    else:
        records = rows
    for index, record in zip(where, records, strict=True):
        if names or type(record) is dict or isinstance(record, dict):
            try:
                msg = validate(record, target_stores=target_stores, ttl_seconds=ttl_seconds,
                               api_invocation_time_ns=api_invocation_time_ns)
            except ValidationError as exc:
                rejects.append(Rejection(index, str(exc), exc.feature))
                continue
        elif isinstance(record, RowError):  # a file row that could not be read (streams.datafiles)
            rejects.append(Rejection(index, record.reason, record.feature))
            continue
        else:
            rejects.append(Rejection(index, f"row {index} is a {type(record).__name__}, expected a "
                                            f"dict of feature name to value"))
            continue
        if headers is None:
            headers = encode_headers(msg)  # same for every record of this call (see EncodedChunk)
        key, value = msg.id.encode("utf-8"), encode_value(msg)
        if len(value) > SIZE_CHECK_FROM:  # rare: only a value near the limit can pass it
            try:
                check_message_size(key, value, headers, record_id=msg.id, group=validator.group.name)
            except ValidationError as exc:
                rejects.append(Rejection(index, str(exc), exc.feature))
                continue
        keys.append(key)
        values.append(value)
        done.append(index)
    return EncodedChunk(keys, values, headers, rejects, len(rows), done)


