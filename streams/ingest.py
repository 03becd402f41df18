"""Bulk ingestion: validate every row, publish the valid ones, report every rejected one.

Never raises halfway and loses the rest (the reference SDK does): each invalid row is
reported with its index and reason, and the valid rows are published. With ``strict=True``
nothing is published unless every row is valid.

Validation and encoding are the CPU-heavy part; with ``max_workers > 1`` chunks are
validated and encoded in worker processes (each compiles the group's validator once) while
the parent process only hands pre-encoded bytes to the producer, which batches them: there
is no per-row round trip.

Broker outages: every published row is tracked until Kafka acknowledges it. The producer waits
out an outage up to the delivery timeout; rows still unacknowledged after it are listed, each
with its index, in ``IngestResult.unacknowledged`` and the call raises ``IngestIncompleteError``.
Ingesting exactly those rows again with the failed call's ``resume_token`` publishes each once
(streams.resume finds the ones the broker kept without acknowledging them).
"""

from __future__ import annotations

import gc
import os
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np

from schemas.errors import ServiceUnavailableError
from schemas.group import FeatureGroup
from schemas.validate import compile_validator
from streams.bulkencode import encode_part
from streams.encoding import Encoded, EncodedChunk, Rejection, encode_rows
from streams.publisher import BulkPublisher, PublishBatch, Publisher
from streams.resume import published_by, record_digest
from streams.rowsource import Chunk, compact_part, count_rows, iter_parts

__all__ = ["Encoded", "EncodedChunk", "IngestIncompleteError", "IngestResult", "Rejection", "encode_chunk",
           "ingest"]


@dataclass
class IngestResult:
    """What ``ingest`` did: counts, and every rejected row with its reason."""

    group: str
    total: int = 0
    published: int = 0
    rejected: list[Rejection] = field(default_factory=list)
    strict: bool = False
    seconds: float = 0.0
    # Valid rows Kafka did not acknowledge (broker away longer than the delivery timeout), by index.
    unacknowledged: list[Rejection] = field(default_factory=list)
    delivery_error: str | None = None
    # The fs-api-invocation-time every record of this call carries; what a resumed ingest needs.
    api_invocation_time_ns: int = 0
    # Resumed ingest only: rows found on the topic already (kept by the broker, unacknowledged).
    already_published: int = 0

    @property
    def ok(self) -> bool:
        return not self.rejected and not self.unacknowledged

    @property
    def resume_token(self) -> int | None:
        """Pass to ``ingest(..., resume_token=)`` with exactly the unacknowledged rows."""
        return self.api_invocation_time_ns if self.unacknowledged else None

    def summary(self) -> str:
        rate = self.published / self.seconds if self.seconds > 0 else 0.0
        text = (f"{self.group}: {self.total} rows, {self.published} published, {len(self.rejected)} rejected "
                f"in {self.seconds:.2f} s ({rate:,.0f} records/s)")
        if self.already_published:
            text += f"; {self.already_published} were already on the topic from the earlier attempt"
        if self.unacknowledged:
            text += (f"; {len(self.unacknowledged)} NOT acknowledged by Kafka ({self.delivery_error}): ingest "
                     f"exactly those rows again with resume token {self.api_invocation_time_ns}")
        if self.strict and self.rejected:
            text += " — strict mode: nothing was published because some rows are invalid"
        return text


class IngestIncompleteError(ServiceUnavailableError):
    """Kafka did not acknowledge some valid rows within the delivery timeout; ``result`` says which."""

    def __init__(self, result: IngestResult) -> None:
        first = ", ".join(str(r.index) for r in result.unacknowledged[:10])
        more = f" and {len(result.unacknowledged) - 10} more" if len(result.unacknowledged) > 10 else ""
        super().__init__(f"ingest into {result.group!r}: {len(result.unacknowledged)} of {result.total} rows were not "
                         f"acknowledged by Kafka ({result.delivery_error}): rows {first}{more}. "
                         f"{result.published} rows were acknowledged. Ingest exactly the unacknowledged rows again "
                         f"with resume token {result.api_invocation_time_ns} to publish each once.")
        self.result = result


# -- validation + encoding of one chunk (runs in the parent or in a worker process) ------------

_worker_validator = None


def _init_worker(group_dict: dict[str, Any]) -> None:
    global _worker_validator
    _worker_validator = compile_validator(FeatureGroup.from_dict(group_dict))


def _encode_part_in_worker(start: int, part: Any, options: dict[str, Any]) -> EncodedChunk:
    assert _worker_validator is not None
    # The worker converts the raw slice itself (see rowsource.iter_parts): the parent only
    # pickles slices, unpickles bytes and produces.
    return encode_part(_worker_validator, start, part, **options)


def encode_chunk(validator: Any, chunk: Chunk, *, target_stores: Iterable[str] | None = None,
                 ttl_seconds: int | None = None, api_invocation_time_ns: int = 0,
                 ) -> tuple[list[Encoded], list[Rejection]]:
    """Validate and encode one chunk; invalid rows become Rejections (never an exception)."""
    done = encode_rows(validator, chunk, target_stores=target_stores, ttl_seconds=ttl_seconds,
                        api_invocation_time_ns=api_invocation_time_ns)
    return list(done.records()), done.rejects


# -- the driver ----------------------------------------------------------------------------------

# Rows per part: each part is encoded with a few hundred Arrow calls and published as one batch, both
# costs fixed per part. Measured on 2 cores, 200k rows of 10 features in this process (bench/publish.py's
# rows, sizes rotated, medians of 3): Arrow 134,564 records/s in parts of 5,000, 173,012 in parts of
# 20,000, 180,156 in parts of 50,000; a DataFrame 128,532 / 150,969 / 154,280. 20,000 takes most of the
# gain; a part's encoded records (~20 MB of ~1 KB rows) leave memory once queued to the producer.
CHUNK_ROWS = 20_000


def ingest(publisher: Publisher, topic: str, group: FeatureGroup, data: object, *, strict: bool = False,
           max_workers: int | None = None, progress: bool = True, target_stores: Sequence[str] | None = None,
           ttl_seconds: int | None = None, chunk_size: int = CHUNK_ROWS, validate_only: bool = False,
           resume_token: int | None = None) -> IngestResult:
    """Validate and publish ``data`` to ``topic``; see the module docstring.

    ``validate_only`` publishes nothing and holds nothing: the first pass of a strict file
    ingest (``streams.fileingest``), which must not keep a whole file's records in memory.
    ``resume_token``: the ``resume_token`` of an earlier call that raised IngestIncompleteError,
    with ``data`` exactly its unacknowledged rows: rows that reached the topic anyway are skipped.
    """
    started = time.perf_counter()
    publisher.check_topic(topic)  # broker down / topic missing: fail before reading any data
    api_time = resume_token if resume_token is not None else time.time_ns()
    result = IngestResult(group=group.name, strict=strict, api_invocation_time_ns=api_time)
    options = {"target_stores": list(target_stores) if target_stores else None, "ttl_seconds": ttl_seconds,
               "api_invocation_time_ns": api_time}
    # Resuming: what the earlier attempt left on the topic, to publish none of it again.
    landed = (published_by(publisher.bootstrap, topic, resume_token, timeout_s=publisher.timeout_s)
              if resume_token is not None else None)
    total = count_rows(data)
    workers = _choose_workers(max_workers, total, data)
    bar = _progress_bar(progress, total, group.name)
    encoded_chunks = _encoded_chunks(group, iter_parts(data, chunk_size), options, workers)
    # Kafka unavailable for longer than the delivery timeout: stop queueing (set by a delivery report).
    abort = threading.Event()
    sent: list[tuple[Sequence[int], PublishBatch]] = []  # row indexes of each batch, for its failures

    def publish(bulk: BulkPublisher, done: EncodedChunk) -> None:
        if landed is not None:
            done = _without_landed(done, landed, result)
        if done.keys:
            sent.append((compact_indexes(done.indexes), bulk.publish(topic, done.records(), abort=abort)))

    try:
        with publisher.bulk() as bulk:
            _publish_all(encoded_chunks, partial(publish, bulk), result, bar, strict=strict,
                         validate_only=validate_only)
            _settle(bulk, sent, result)
    finally:
        if bar is not None:
            bar.close()
    result.seconds = time.perf_counter() - started
    if result.unacknowledged:
        raise IngestIncompleteError(result)
    return result


def _publish_all(encoded_chunks: Iterator[EncodedChunk], publish: Callable[[EncodedChunk], None],
                 result: IngestResult, bar: Any, *,
                 strict: bool, validate_only: bool) -> None:
    held: list[EncodedChunk] = []  # strict mode publishes only after every row passed
    for done in encoded_chunks:
        result.total += done.rows
        result.rejected.extend(done.rejects)
        if validate_only:
            pass
        elif strict:
            if not result.rejected:
                held.append(done)
        else:
            publish(done)
        if bar is not None:
            bar.update(done.rows)
    if strict and not result.rejected:
        for done in held:
            publish(done)


def _without_landed(done: EncodedChunk, landed: Counter[bytes], result: IngestResult) -> EncodedChunk:
    """``done`` without the records already on the topic (each found copy excuses one row)."""
    keys: list[bytes] = []
    values: list[bytes] = []
    indexes: list[int] = []
    for key, value, index in zip(done.keys, done.values, done.indexes, strict=True):
        digest = record_digest(key, value)
        if landed[digest] > 0:
            landed[digest] -= 1
            result.already_published += 1
            continue
        keys.append(key)
        values.append(value)
        indexes.append(index)
    return EncodedChunk(keys, values, done.headers, done.rejects, done.rows, indexes)


def compact_indexes(indexes: list[int]) -> Sequence[int]:
    """``indexes`` as a ``range`` when they are consecutive (a part with no rejected row), else as 8-byte
    integers: they are kept until the ingest settles, and as a list of ints they cost ~36 bytes a row,
    36 MB a million rows of a file that is otherwise read in bounded memory."""
    found = np.asarray(indexes, dtype=np.int64)
    if bool((np.diff(found) == 1).all()):
        return range(int(found[0]), int(found[-1]) + 1) if len(found) else range(0)
    return found


def _settle(bulk: BulkPublisher, sent: list[tuple[Sequence[int], PublishBatch]], result: IngestResult) -> None:
    """Wait for every delivery report; count the acknowledged rows and list the others by index."""
    for indexes, batch in sent:
        bulk.settle(batch)
        result.published += batch.acked
        for number, reason in batch.unacknowledged(len(indexes)).items():
            result.unacknowledged.append(Rejection(int(indexes[number]), reason))
        if batch.first_error is not None and result.delivery_error is None:
            result.delivery_error = str(batch.first_error)
    result.unacknowledged.sort(key=lambda r: r.index)


def _encoded_chunks(group: FeatureGroup, parts: Iterator[tuple[int, Any]], options: dict[str, Any],
                    workers: int) -> Iterator[EncodedChunk]:
    if workers <= 1:
        validator = compile_validator(group)
        for start, part in parts:
            yield encode_part(validator, start, part, **options)
        return
    pool: Executor = ProcessPoolExecutor(max_workers=workers, initializer=_init_worker,
                                         initargs=(group.to_dict(),))
    try:
        pending: deque[Future[EncodedChunk]] = deque()
        for start, part in parts:
            submit = pool.submit if pending else partial(_first_submit, pool)
            pending.append(submit(_encode_part_in_worker, start, compact_part(part), options))
            # Keep a bounded number of chunks in flight so memory stays flat on big inputs,
            # and yield in order so rejected indexes and per-key order are preserved.
            while len(pending) > workers * 2:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        pool.shutdown(cancel_futures=True)


def _first_submit(pool: Executor, fn: Any, *args: Any) -> Future[Any]:
    """``pool.submit`` for the first part, the one that forks every worker (with the fork start
    method a ProcessPoolExecutor starts them all at its first submit).

    A forked worker inherits this process's whole heap, its uncollected garbage included, and a
    collection in the worker would run the finalizers of objects it never owned: a Kafka client
    left in a reference cycle, whose librdkafka threads do not exist in the child. That crashed a
    worker with SIGSEGV ("Garbage-collecting", in the pool's queue read) in the test suite, where the
    pytest process carries what earlier tests left. Frozen across the fork, what the worker inherits
    is never collected there; this process unfreezes as soon as the workers exist, unless its heap
    was frozen before (streams.gc_tuning freezes a long-running process's start-up heap): unfreezing
    would undo that, and keeping what it froze is what that caller asked for."""
    frozen_before = gc.get_freeze_count() > 0
    gc.freeze()
    try:
        return pool.submit(fn, *args)
    finally:
        if not frozen_before:
            gc.unfreeze()


# Fewer cores than this: rows already in memory are encoded in the calling process (see _choose_workers).
POOL_MIN_CORES_IN_MEMORY = 4


def _choose_workers(max_workers: int | None, total: int | None, data: object = None) -> int:
    """Worker processes for ``data``: ``max_workers`` if given, else 1 (this process) for small
    inputs and, on fewer than 4 cores, for rows already in memory; else up to 4.

    Why in memory differs, measured on 2 cores (bench/publish.py, 200k records, interleaved,
    medians of 3): in this process a DataFrame ingested at 131,799/s and with 2 workers at 107,194/s;
    Arrow 150,447/s against 56,387/s (before its slices were compacted for pickling: compact_part);
    dicts 74,264/s against 60,877/s. The parent, the workers, librdkafka and the broker then share
    2 cores, and the parent, which already holds the rows, spends on pickling them out and the
    results back much of what the workers save it. File blocks are cheap to ship and costly to parse
    (11 features, one of 700 characters), and there the pool wins: CSV 76,485 rows/s against 61,130
    in this process. A Parquet file's parts are Arrow columns, as cheap to ship as to encode, so it goes
    as rows in memory do (100,295 and 118,517 rows/s in this process against 93,811 and 88,662 with 2
    workers, the same 11 features; 10-12 CPU-µs a row against 17). Not measured on 4 or more cores,
    where the pool is kept as it was."""
    if max_workers is not None:
        return max(1, max_workers)
    if total is not None and total < 50_000:
        return 1  # a pool costs ~100 ms to start; not worth it for small inputs
    cores = os.cpu_count() or 2
    parsed_by_workers = callable(getattr(data, "iter_parts", None)) and not getattr(data, "columnar", False)
    if cores < POOL_MIN_CORES_IN_MEMORY and not parsed_by_workers:
        return 1
    return max(1, min(4, cores))


def _progress_bar(progress: bool, total: int | None, name: str) -> Any:
    import sys

    if not progress or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="rec", desc=f"ingest {name}", file=sys.stderr)
