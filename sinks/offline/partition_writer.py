"""The writer of one Kafka (topic, partition): buffers rows per hour partition, writes files.

Exactly once, Kafka Connect S3 sink style
-----------------------------------------
Transport is at-least-once: after a crash the consumer restarts at the last *committed*
offset C and the messages after C come again. The offline store stays exactly-once because:

1. A file's object name is a pure function of its content's Kafka coordinates:
   ``<topic>+<partition:05d>+<first offset of this batch's rows in this hour:020d>.parquet``
   inside the hour partition of the rows' event time. The last offset is NOT in the name; it
   is in the Parquet key-value metadata (``featurestream.last_offset``).
2. Offsets are committed only after every file of a batch is durable, and a batch always
   starts at the committed offset (the consumer commits synchronously after each flush, see
   writer.py), so any batch, first try or redelivery, starts at some committed offset C.
3. Take a file F of hour h written by an uncommitted batch that started at C; its name is f,
   the first offset >= C whose row falls in hour h, and it holds h's rows of [f, L]. After
   the crash the replacement batches start at C again and then continue contiguously. The
   replacement batch that contains offset f started at some s with C <= s <= f, and the log
   has no h-row in [C, f), hence none in [s, f): its first h-row is f again, so it writes the
   SAME name f, and that single atomic PUT / os.replace replaces F entirely. Whether it ends
   before or after L does not matter: h's rows past its end go to the next batch under a new
   name (first h-row after that end), and since F is gone no row is in two files.
   Had the last offset been part of the name, a redelivery that rotated at a different point
   (age-based rotation makes that the normal case) would leave F beside its replacement:
   duplicates. Because a committed batch's files are never rewritten (batches after it start
   past it), a file is final once its batch is committed - what compaction relies on.
4. Every write is atomic (S3 PUT or completed multipart upload; local temp file + os.replace),
   so readers never see half a file, and temp names start with '.', which readers skip.

What this needs from the caller: flush, then commit ``next_offset`` synchronously before
flushing this partition again; on a failed commit or a revoked partition, ``discard`` the
buffer and resume from the committed offset. Not covered: a zombie process that lost its
partition but still writes (Kafka has no fencing for plain consumers).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from schemas.group import FeatureGroup
from schemas.messages import DeleteMessage, PutMessage
from schemas.names import partition_path
from sinks.offline import layout
from sinks.offline.errors import OfflineLayoutError, OfflineRowError
from sinks.offline.fs import write_atomic
from sinks.offline.rotation import RotationPolicy, rotation_reason
from sinks.offline.rows import Item, estimate_row_bytes, rows_to_table

HOUR_NS = 3_600_000_000_000


@dataclass(frozen=True, slots=True)
class FlushResult:
    """What a flush wrote. Commit ``next_offset`` (None: nothing seen, nothing to commit)."""

    files: list[str]
    rows: int
    next_offset: int | None
    rejected: list[tuple[Item, OfflineRowError]] = field(default_factory=list)


def table_bytes(table: pa.Table, metadata: dict[bytes, bytes]) -> bytes:
    """Serialise a table as one Parquet file in memory (so the write is one atomic PUT)."""
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), **metadata})
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


class PartitionWriter:
    """Buffers the rows of one (topic, partition), one buffer per event-time hour."""

    def __init__(self, fs: Any, table_path: str, group: FeatureGroup, topic: str, partition: int,
                 policy: RotationPolicy, clock: Callable[[], float] = time.monotonic,
                 wall_clock_ns: Callable[[], int] = time.time_ns) -> None:
        self.fs = fs
        self.table_path = table_path
        self.group = group
        self.topic = topic
        self.partition = partition
        self.policy = policy
        self._clock = clock
        self._wall_ns = wall_clock_ns
        self._hour_names: dict[int, str] = {}  # hour number -> partition path (datetime math is slow)
        self._reset()

    def _reset(self) -> None:
        self._hours: dict[str, list[Item]] = {}
        self._row_bytes = 0  # sampled estimate of one row's size, see add()
        self._rows = 0
        self._bytes = 0
        self._first_seen_at: float | None = None
        self._first_seen_offset: int | None = None

    # Offset of the last message seen, kept across flushes to catch a consumer that re-seeks
    # without discarding (which would break the "batch starts at the committed offset" rule).
    _last_offset: int | None = None

    @property
    def buffered_rows(self) -> int:
        return self._rows

    def add(self, group: FeatureGroup, message: PutMessage | DeleteMessage, offset: int, *,
            keep: bool = True) -> None:
        """Buffer ``message`` at ``offset`` (``keep=False``: only advance the offset, no row)."""
        if type(offset) is not int or offset < 0:
            raise OfflineLayoutError(f"feature group {group.name!r}: Kafka offset must be a non-negative "
                                     f"int; got {offset!r} ({self.topic}[{self.partition}])")
        if self._last_offset is not None and offset <= self._last_offset:
            raise OfflineLayoutError(
                f"feature group {group.name!r}: offset {offset} of {self.topic}[{self.partition}] is not "
                f"after the last one added ({self._last_offset}); after a seek/rebalance call "
                "discard(topic, partition) first so batches start at the committed offset")
        if group.version > self.group.version:
            self.group = group  # newer definition (added features): older rows get nulls
        if self._first_seen_at is None:
            self._first_seen_at = self._clock()
            self._first_seen_offset = offset
        self._last_offset = offset
        if not keep:
            return
        ns = message.event_time_ns
        if type(ns) is not int:
            raise OfflineRowError(f"feature group {group.name!r}, message {self.topic}[{self.partition}]"
                                  f"@{offset}: event_time_ns must be an int; got {ns!r}", group=group.name,
                                  value=ns, topic=self.topic, partition=self.partition, offset=offset)
        hour_key = ns // HOUR_NS
        hour = self._hour_names.get(hour_key)
        try:
            if hour is None:
                if len(self._hour_names) > 100_000:  # a long backfill: keep the cache bounded
                    self._hour_names.clear()
                hour = self._hour_names[hour_key] = partition_path(ns)
        except (OverflowError, ValueError) as exc:
            raise OfflineRowError(f"feature group {group.name!r}, message {self.topic}[{self.partition}]"
                                  f"@{offset}: event_time_ns {ns} is outside years 1-9999 ({exc})",
                                  group=group.name, value=ns, topic=self.topic, partition=self.partition,
                                  offset=offset) from None
        self._hours.setdefault(hour, []).append((message, self.topic, self.partition, offset))
        # Walking every record to size it costs more than converting it; sample 1 row in 256.
        if self._rows % 256 == 0:
            self._row_bytes = estimate_row_bytes(message)
        self._rows += 1
        self._bytes += self._row_bytes

    def due(self, now: float | None = None) -> str | None:
        """Why this partition should be flushed now, or None."""
        now = self._clock() if now is None else now
        seen = 0 if self._first_seen_offset is None else max(self._rows, 1)
        return rotation_reason(self.policy, seen, self._bytes, self._first_seen_at, now)

    def discard(self) -> None:
        """Forget buffered rows (partition revoked, commit failed): redelivery will bring them."""
        self._reset()
        self._last_offset = None

    def flush(self) -> FlushResult:
        """Write every hour buffer as one file each, atomically; then the caller commits.

        A message that cannot become a row is taken out of the batch and returned in
        ``rejected`` (for the dead-letter topic); the rest is written. If a write fails the
        buffers are kept, and flushing again rewrites the same names (idempotent).
        """
        if self._first_seen_offset is None:
            return FlushResult([], 0, None)
        assert self._last_offset is not None
        rejected: list[tuple[Item, OfflineRowError]] = []
        write_ns = self._wall_ns()
        prepared: list[tuple[str, bytes, int]] = []
        for hour in sorted(self._hours):
            items = self._hours[hour]
            while items:
                try:
                    table = rows_to_table(self.group, items, write_ns, check_coordinates=False)
                    break
                except OfflineRowError as exc:
                    bad = [i for i, it in enumerate(items) if it[3] == exc.offset]
                    if not bad:
                        raise
                    rejected.append((items[bad[0]], exc))
                    items = items[:bad[0]] + items[bad[0] + 1:]
            if not items:
                continue
            first, last = items[0][3], items[-1][3]
            meta = {layout.META_TOPIC: self.topic.encode(), layout.META_PARTITION: str(self.partition).encode(),
                    layout.META_FIRST: str(first).encode(), layout.META_LAST: str(last).encode()}
            path = layout.data_file_path(self.table_path, hour, self.topic, self.partition, first)
            prepared.append((path, table_bytes(table, meta), len(items)))
        files: list[str] = []
        rows = 0
        for path, data, n in prepared:
            write_atomic(self.fs, path, data)
            files.append(path)
            rows += n
        result = FlushResult(files, rows, self._last_offset + 1, rejected)
        self._reset()
        return result
