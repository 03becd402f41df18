"""The writer of one Kafka (topic, partition): buffer rows, upload data files, commit with offsets.

A batch of a partition is the contiguous offsets ``[start, next)``, where ``start`` is what the
group's Iceberg table records for the partition (``resume``) and moves on with each commit this
writer makes. A flush (``flush_table``, for the due partitions of one table together):

1. turns each partition's buffered messages into rows (``PartitionWriter.prepare``) (a message that cannot become a row is taken out and
   handed to ``before_commit`` for the dead-letter topic, so it is dead-lettered before its
   offset is recorded);
2. **uploads** them as Parquet data files of the table (new, unique names; nothing references
   them yet, so a crash here leaves only orphans that orphan removal deletes);
3. **commits** the files and every partition's ``next`` in ONE snapshot, refused unless the
   table still records each ``start`` (``table_commit.commit_append``). A refusal deletes the
   uploaded files and raises ``OffsetsMismatchError``: the batches are forgotten and the caller
   resumes those partitions from the table.

Messages that only advance the offset (the group's offline store is off for them) are
committed too, as a snapshot without files, so the table's offsets stay the one resume point.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.table import Table

from schemas.ddl import offline_arrow_schema
from schemas.group import FeatureGroup
from schemas.messages import DeleteMessage, PutMessage
from sinks.offline.columns import ColumnRows, conformed
from sinks.offline.errors import OfflineLayoutError, OfflineRowError, OffsetsMismatchError
from sinks.offline.rotation import RotationPolicy, rotation_reason
from sinks.offline.rows import KAFKA_OFFSET, Item, estimate_row_bytes, rows_to_table
from sinks.offline.table_commit import Advance, commit_append
from sinks.offline.table_files import write_data_files
from sinks.offline.table_format import to_table_rows

# Test hooks (crash tests SIGKILL the process at these points of a flush).
STAGES = ("before_upload", "after_upload")
StageHook = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class FlushResult:
    """What a flush committed: ``next_offset`` is now recorded in the table (None: nothing to do)."""

    files: list[str]
    rows: int
    next_offset: int | None
    rejected: list[tuple[Item, OfflineRowError]] = field(default_factory=list)


class PartitionWriter:
    """Buffers the rows of one (topic, partition) and commits them to the group's table."""

    def __init__(self, open_table: Callable[[FeatureGroup], Table], group: FeatureGroup, topic: str,
                 partition: int, start: int | None, policy: RotationPolicy,
                 clock: Callable[[], float] = time.monotonic, wall_clock_ns: Callable[[], int] = time.time_ns,
                 stage_hook: StageHook | None = None) -> None:
        self.open_table = open_table
        self.group = group
        self.topic = topic
        self.partition = partition
        self.start = start  # what the table records for this partition (None: nothing yet)
        self.policy = policy
        self._clock = clock
        self._wall_ns = wall_clock_ns
        self._stage_hook = stage_hook
        self._reset()

    def _reset(self) -> None:
        self._items: list[Item] = []        # messages that went the per-record way
        # rows the batch decode proved (schemas/batch.py), view-shaped; their source columns are
        # not kept (only the sampled size estimate needs them, at add time)
        self._chunks: list[pa.Table] = []
        self._rows = 0                       # both together
        self._row_bytes = 0  # sampled estimate of one row's size, see add()
        self._bytes = 0
        self._first_seen_at: float | None = None
        self._first_offset: int | None = None
        self._last_offset: int | None = None

    @property
    def buffered_rows(self) -> int:
        return self._rows

    def skip(self, offset: int) -> None:
        """Only advance the offset (a poison message, dead-lettered by the caller)."""
        self._advance(self.group, offset)

    def _advance(self, group: FeatureGroup, offset: int) -> None:
        if type(offset) is not int or offset < 0:
            raise OfflineLayoutError(f"feature group {group.name!r}: Kafka offset must be a non-negative "
                                     f"int; got {offset!r} ({self.topic}[{self.partition}])")
        expected = self.start if self._last_offset is None else self._last_offset + 1
        if self._last_offset is not None and offset <= self._last_offset or \
                self._last_offset is None and self.start is not None and offset < self.start:
            raise OfflineLayoutError(
                f"feature group {group.name!r}: offset {offset} of {self.topic}[{self.partition}] is not "
                f"where this writer's batch goes on ({expected}); after a seek/rebalance call "
                "discard(topic, partition) and resume from the offsets the table records")
        if self._first_seen_at is None:
            self._first_seen_at = self._clock()
            self._first_offset = offset
        self._last_offset = offset

    def adopt(self, group: FeatureGroup) -> None:
        """Take ``group``'s definition if it is newer (features are only ever added: older rows get nulls)."""
        if group.version > self.group.version:
            self.group = group

    def add(self, group: FeatureGroup, message: PutMessage | DeleteMessage, offset: int, *,
            keep: bool = True) -> None:
        """Buffer ``message`` at ``offset`` (``keep=False``: only advance the offset, no row)."""
        self._advance(group, offset)
        self.adopt(group)
        if not keep:
            return
        ns = message.event_time_ns
        if type(ns) is not int:
            raise OfflineRowError(f"feature group {group.name!r}, message {self.topic}[{self.partition}]"
                                  f"@{offset}: event_time_ns must be an int; got {ns!r}", group=group.name,
                                  value=ns, topic=self.topic, partition=self.partition, offset=offset)
        if not -62_135_596_800 * 10**9 <= ns < 253_402_300_800 * 10**9:
            raise OfflineRowError(f"feature group {group.name!r}, message {self.topic}[{self.partition}]"
                                  f"@{offset}: event_time_ns {ns} is outside years 1-9999", group=group.name,
                                  value=ns, topic=self.topic, partition=self.partition, offset=offset)
        self._items.append((message, self.topic, self.partition, offset))
        self._account(1, lambda _: estimate_row_bytes(message))

    def add_rows(self, group: FeatureGroup, chunk: ColumnRows, *, keep: bool = True) -> None:
        """Buffer rows the batch decode proved valid (``keep=False``: only advance the offsets).

        Their event times are int64 nanoseconds >= 0, inside years 1-9999 by construction."""
        offsets = chunk.offsets
        if not len(offsets):
            return
        if len(offsets) > 1 and not bool((np.diff(offsets) > 0).all()):
            raise OfflineLayoutError(f"feature group {group.name!r}: the offsets of a chunk of "
                                     f"{self.topic}[{self.partition}] must increase; got {offsets[:10]!r}...")
        self._advance(group, int(offsets[0]))
        self._last_offset = int(offsets[-1])
        self.adopt(group)
        if not keep:
            return
        self._chunks.append(chunk.rows)
        self._account(len(chunk), chunk.estimate_bytes)

    def _account(self, k: int, estimate: Callable[[int], int]) -> None:
        """Count ``k`` new rows. Walking every record to size it costs more than converting it: the
        size of 1 row in 256 (the 1st, 257th... of the buffer) stands for the rows up to the next."""
        n = self._rows
        pos = 1
        j = (1 - n) % 256 or 256  # the chunk's first row j with (n + j) % 256 == 1
        while j <= k:
            self._bytes += (j - pos) * self._row_bytes
            self._row_bytes = estimate(j - 1)
            pos = j
            j += 256
        self._bytes += (k + 1 - pos) * self._row_bytes
        self._rows = n + k

    def due(self, now: float | None = None) -> str | None:
        """Why this partition should be flushed now, or None."""
        now = self._clock() if now is None else now
        seen = 0 if self._first_offset is None else max(self._rows, 1)
        return rotation_reason(self.policy, seen, self._bytes, self._first_seen_at, now)

    def discard(self) -> None:
        """Forget buffered rows (partition revoked, commit refused): redelivery brings them back."""
        self._reset()

    def prepare(self) -> Prepared | None:
        """The buffered batch as table rows and the offsets it advances (None: nothing seen).

        A message that cannot become a row is taken out into ``rejected`` (for the dead-letter
        topic); its offset still advances."""
        if self._first_offset is None:
            return None
        assert self._last_offset is not None
        items = list(self._items)
        rejected: list[tuple[Item, OfflineRowError]] = []
        views: list[pa.Table] = []
        write_ns = self._wall_ns()
        while items:
            try:
                views.append(rows_to_table(self.group, items, write_ns, check_coordinates=False))
                break
            except OfflineRowError as exc:
                bad = [i for i, it in enumerate(items) if it[3] == exc.offset]
                if not bad:
                    raise
                rejected.append((items[bad[0]], exc))
                items = items[:bad[0]] + items[bad[0] + 1:]
        if self._chunks:
            schema = offline_arrow_schema(self.group)
            views += [conformed(rows, schema, write_ns) for rows in self._chunks]
        table_rows = None
        if views:
            view = pa.concat_tables(views) if len(views) > 1 else views[0]
            if items and self._chunks:  # both ways in one batch: back to offset order
                view = view.take(pc.sort_indices(view.column(KAFKA_OFFSET)))
            table_rows = to_table_rows(view, self.group.event_time_name)
        return Prepared(self, table_rows, rejected,
                        Advance(self.topic, self.partition, self.start, self._last_offset + 1))

    def committed(self, advance: Advance) -> None:
        """The table now records ``advance.next``: the next batch starts there."""
        self.start = advance.next
        self._reset()

    def refused(self, recorded: int | None) -> None:
        """Another writer committed this range: forget the batch; the table records ``recorded``."""
        self._reset()
        self.start = recorded


@dataclass(slots=True)
class Prepared:
    writer: PartitionWriter
    rows: pa.Table | None
    rejected: list[tuple[Item, OfflineRowError]]
    advance: Advance


def flush_table(prepared: list[Prepared], open_table: Callable[[], Table], *,
                before_commit: Callable[[list[tuple[Item, OfflineRowError]]], None] | None = None,
                stage_hook: StageHook | None = None) -> dict[tuple[str, int], FlushResult]:
    """Upload the prepared batches of one table's partitions and commit them in ONE snapshot.

    If the upload or the commit fails for a transient reason the buffers are kept and flushing
    again uploads fresh files (the first upload's become orphans). A refused commit
    (OffsetsMismatchError) forgets every batch of the commit: the caller resumes them all from
    the table.
    """
    table = open_table()
    if stage_hook is not None:
        stage_hook("before_upload")
    parts = [p.rows for p in prepared if p.rows is not None]
    rows = pa.concat_tables(parts) if len(parts) > 1 else (parts[0] if parts else None)
    data_files = write_data_files(table, rows) if rows is not None else []
    if stage_hook is not None:
        stage_hook("after_upload")
    rejected = [r for p in prepared for r in p.rejected]
    if rejected and before_commit is not None:
        before_commit(rejected)
    try:
        commit_append(open_table, data_files, [p.advance for p in prepared], first=table)
    except OffsetsMismatchError as exc:
        for p in prepared:
            key = (p.advance.topic, p.advance.partition)
            p.writer.refused(exc.recorded[key] if key in exc.recorded else p.advance.start)
        raise
    out = {}
    files = [f.file_path for f in data_files]
    for i, p in enumerate(prepared):
        p.writer.committed(p.advance)
        n = 0 if p.rows is None else p.rows.num_rows
        # One snapshot for every partition: its files are reported once, with the first.
        out[(p.advance.topic, p.advance.partition)] = FlushResult(files if i == 0 else [], n, p.advance.next,
                                                                  p.rejected)
    return out
