"""Bulk ingestion: validate every row, publish the valid ones, report every rejected one.

Never raises halfway and loses the rest (the reference SDK does): each invalid row is
reported with its index and reason, and the valid rows are published. With ``strict=True``
nothing is published unless every row is valid.

Validation and encoding are the CPU-heavy part; with ``max_workers > 1`` chunks are
validated and encoded in worker processes (each compiles the group's validator once) while
the parent process only hands pre-encoded bytes to the producer, which batches them: there
is no per-row round trip.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from schemas.errors import ValidationError
from schemas.group import FeatureGroup
from schemas.validate import compile_validator
from schemas.wire import encode
from streams.publisher import Publisher
from streams.rowsource import Chunk, count_rows, iter_chunks

Encoded = tuple[bytes, bytes, list[tuple[str, bytes]]]


@dataclass(frozen=True)
class Rejection:
    """One row that was not published, and why."""

    index: int
    reason: str
    feature: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "feature": self.feature, "reason": self.reason}


@dataclass
class IngestResult:
    """What ``ingest`` did: counts, and every rejected row with its reason."""

    group: str
    total: int = 0
    published: int = 0
    rejected: list[Rejection] = field(default_factory=list)
    strict: bool = False
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.rejected

    def summary(self) -> str:
        rate = self.published / self.seconds if self.seconds > 0 else 0.0
        text = (f"{self.group}: {self.total} rows, {self.published} published, {len(self.rejected)} rejected "
                f"in {self.seconds:.2f} s ({rate:,.0f} records/s)")
        if self.strict and self.rejected:
            text += " — strict mode: nothing was published because some rows are invalid"
        return text


# -- validation + encoding of one chunk (runs in the parent or in a worker process) ------------

_worker_validator = None


def _init_worker(group_dict: dict[str, Any]) -> None:
    global _worker_validator
    _worker_validator = compile_validator(FeatureGroup.from_dict(group_dict))


def _encode_chunk_in_worker(chunk: Chunk, options: dict[str, Any]) -> tuple[list[Encoded], list[Rejection]]:
    assert _worker_validator is not None
    return encode_chunk(_worker_validator, chunk, **options)


def encode_chunk(validator: Any, chunk: Chunk, *, target_stores: Iterable[str] | None = None,
                 ttl_seconds: int | None = None, api_invocation_time_ns: int = 0,
                 ) -> tuple[list[Encoded], list[Rejection]]:
    """Validate and encode one chunk; invalid rows become Rejections (never an exception)."""
    start, names, rows = chunk
    validate = validator.validate
    out: list[Encoded] = []
    rejects: list[Rejection] = []
    for i, row in enumerate(rows):
        if names:
            record = dict(zip(names, row, strict=True))
        elif isinstance(row, dict):
            record = row
        else:
            rejects.append(Rejection(start + i, f"row {start + i} is a {type(row).__name__}, expected a dict "
                                                f"of feature name to value"))
            continue
        try:
            msg = validate(record, target_stores=target_stores, ttl_seconds=ttl_seconds,
                           api_invocation_time_ns=api_invocation_time_ns)
        except ValidationError as exc:
            rejects.append(Rejection(start + i, str(exc), exc.feature))
            continue
        out.append(encode(msg))
    return out, rejects


# -- the driver ----------------------------------------------------------------------------------

def ingest(publisher: Publisher, topic: str, group: FeatureGroup, data: object, *, strict: bool = False,
           max_workers: int | None = None, progress: bool = True, target_stores: Sequence[str] | None = None,
           ttl_seconds: int | None = None, chunk_size: int = 5_000) -> IngestResult:
    """Validate and publish ``data`` to ``topic``; see the module docstring."""
    started = time.perf_counter()
    result = IngestResult(group=group.name, strict=strict)
    publisher.check_topic(topic)  # broker down / topic missing: fail before reading any data
    options = {"target_stores": list(target_stores) if target_stores else None, "ttl_seconds": ttl_seconds,
               "api_invocation_time_ns": time.time_ns()}
    total = count_rows(data)
    workers = _choose_workers(max_workers, total)
    bar = _progress_bar(progress, total, group.name)
    encoded_chunks = _encoded_chunks(group, iter_chunks(data, chunk_size), options, workers)
    held: list[list[Encoded]] = []  # strict mode publishes only after every row passed
    batches = []
    try:
        for encoded, rejects, n in encoded_chunks:
            result.total += n
            result.rejected.extend(rejects)
            if strict:
                if not result.rejected:
                    held.append(encoded)
            elif encoded:
                batches.append(publisher.publish_many(topic, encoded))
            if bar is not None:
                bar.update(n)
        if strict and not result.rejected:
            for encoded in held:
                batches.append(publisher.publish_many(topic, encoded))
        for batch in batches:
            batch.wait(publisher)
            result.published += batch.acked
    finally:
        if bar is not None:
            bar.close()
    result.seconds = time.perf_counter() - started
    return result


def _encoded_chunks(group: FeatureGroup, chunks: Iterator[Chunk], options: dict[str, Any],
                    workers: int) -> Iterator[tuple[list[Encoded], list[Rejection], int]]:
    if workers <= 1:
        validator = compile_validator(group)
        for chunk in chunks:
            encoded, rejects = encode_chunk(validator, chunk, **options)
            yield encoded, rejects, len(chunk[2])
        return
    pool: Executor = ProcessPoolExecutor(max_workers=workers, initializer=_init_worker,
                                         initargs=(group.to_dict(),))
    try:
        pending = []
        for chunk in chunks:
            pending.append((pool.submit(_encode_chunk_in_worker, chunk, options), len(chunk[2])))
            # Keep a bounded number of chunks in flight so memory stays flat on big inputs,
            # and yield in order so rejected indexes and per-key order are preserved.
            while len(pending) > workers * 2:
                fut, n = pending.pop(0)
                yield (*fut.result(), n)
        for fut, n in pending:
            yield (*fut.result(), n)
    finally:
        pool.shutdown(cancel_futures=True)


def _choose_workers(max_workers: int | None, total: int | None) -> int:
    if max_workers is not None:
        return max(1, max_workers)
    if total is not None and total < 50_000:
        return 1  # a pool costs ~100 ms to start; not worth it for small inputs
    return max(1, min(4, (os.cpu_count() or 2)))


def _progress_bar(progress: bool, total: int | None, name: str) -> Any:
    import sys

    if not progress or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="rec", desc=f"ingest {name}", file=sys.stderr)
