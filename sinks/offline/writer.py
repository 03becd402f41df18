"""OfflineWriter: the facade the offline sink's consumer loop (and replay) drives. Independent of Kafka.

How a consumer must drive it (the exactly-once contract, see partition_writer.py and
table_commit.py)::

    writer = OfflineWriter(OfflineTables.open(catalog_uri, prefix, storage_options), RotationPolicy())
    # on assignment: start each partition where the table says (None: from the beginning)
    for tp in assigned: consumer.seek(writer.resume(group_of(tp), tp.topic, tp.partition) or BEGINNING)
    while running:
        msg = consumer.poll(0.5)
        writer.add(group_of(msg.topic()), decode(msg), msg.topic(), msg.partition(), msg.offset())
        for topic, p in writer.due():
            writer.flush(topic, p)      # committed in the table, with its offsets, when it returns
    # a flush refused with OffsetsMismatchError: the partition's buffer is gone; seek to
    # writer.resume(...) again (another writer committed that range).

Committing the consumer group's offsets afterwards is only for lag monitoring: the table's
offsets are where the sink resumes.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from schemas.group import FeatureGroup
from schemas.messages import OFFLINE, DeleteMessage, PutMessage
from sinks.offline.catalog import OfflineTables
from sinks.offline.columns import ColumnRows
from sinks.offline.errors import OfflineLayoutError, OfflineRowError
from sinks.offline.partition_writer import FlushResult, PartitionWriter, Prepared, StageHook, flush_table
from sinks.offline.rotation import RotationPolicy
from sinks.offline.rows import Item
from sinks.offline.table_commit import recorded_offsets

RejectedHook = Callable[[list[tuple[Item, OfflineRowError]]], None]


class OfflineWriter:
    """One PartitionWriter per (topic, Kafka partition), started where the table says."""

    def __init__(self, tables: OfflineTables, policy: RotationPolicy | None = None, *,
                 clock: Callable[[], float] = time.monotonic,
                 wall_clock_ns: Callable[[], int] = time.time_ns,
                 stage_hook: StageHook | None = None) -> None:
        self.tables = tables
        self.policy = policy or RotationPolicy()
        self._clock = clock
        self._wall_ns = wall_clock_ns
        self._stage_hook = stage_hook
        self._writers: dict[tuple[str, int], PartitionWriter] = {}

    def recorded(self, group: FeatureGroup, topic: str) -> dict[int, int]:
        """Next offset per partition of ``topic`` that the group's table records."""
        table = self.tables.existing(group) if group.offline_enabled else None
        if table is None:
            return {}
        return {p: o for (t, p), o in recorded_offsets(table).items() if t == topic}

    def resume(self, group: FeatureGroup, topic: str, partition: int) -> int | None:
        """Forget the partition's buffer and return where its next batch starts: the next offset
        the table records (None: the table holds nothing of it, start at the beginning)."""
        start = self.recorded(group, topic).get(partition)
        self._writers[(topic, partition)] = self._new_writer(group, topic, partition, start)
        return start

    def _new_writer(self, group: FeatureGroup, topic: str, partition: int, start: int | None) -> PartitionWriter:
        return PartitionWriter(self.tables.table, group, topic, partition, start, self.policy, self._clock,
                               self._wall_ns, self._stage_hook)

    def add(self, group: FeatureGroup, message: PutMessage | DeleteMessage, topic: str, partition: int,
            offset: int) -> bool:
        """Buffer one message; True if it becomes a row, False if it only advances the offset
        (offline store disabled for the group, or the message does not target it)."""
        if not isinstance(group, FeatureGroup):
            raise OfflineLayoutError(f"add() needs the message's FeatureGroup; got {type(group).__name__} "
                                     f"{group!r:.100} for {topic!r}[{partition!r}]@{offset!r}")
        if not isinstance(message, (PutMessage, DeleteMessage)):
            raise OfflineLayoutError(f"feature group {group.name!r}: add() needs a PutMessage or "
                                     f"DeleteMessage; got {type(message).__name__} {message!r:.100} "
                                     f"at {topic!r}[{partition!r}]@{offset!r}")
        if not isinstance(topic, str) or not topic or type(partition) is not int or partition < 0:
            raise OfflineLayoutError(f"feature group {group.name!r}: Kafka topic must be a non-empty "
                                     f"string and partition a non-negative int; got {topic!r}, {partition!r}")
        writer = self._writer_for(group, topic, partition, offset)
        keep = group.offline_enabled and OFFLINE in message.target_stores
        writer.add(group, message, offset, keep=keep)
        return keep

    def add_rows(self, group: FeatureGroup, topic: str, partition: int, chunk: ColumnRows) -> bool:
        """Buffer rows the batch decode proved valid (the batch path's :meth:`add`), all of one
        partition, in offset order; True if they become rows, False if they only advance the offset."""
        if not isinstance(group, FeatureGroup):
            raise OfflineLayoutError(f"add_rows() needs the rows' FeatureGroup; got {type(group).__name__} "
                                     f"{group!r:.100} for {topic!r}[{partition!r}]")
        if not isinstance(topic, str) or not topic or type(partition) is not int or partition < 0:
            raise OfflineLayoutError(f"feature group {group.name!r}: Kafka topic must be a non-empty "
                                     f"string and partition a non-negative int; got {topic!r}, {partition!r}")
        writer = self._writer_for(group, topic, partition, int(chunk.offsets[0]) if len(chunk) else -1)
        # The router passes only rows that target the offline store.
        keep = group.offline_enabled
        writer.add_rows(group, chunk, keep=keep)
        return keep

    def _writer_for(self, group: FeatureGroup, topic: str, partition: int, offset: int) -> PartitionWriter:
        key = (topic, partition)
        writer = self._writers.get(key)
        if writer is None:
            self.resume(group, topic, partition)
            writer = self._writers[key]
        elif writer.group.name != group.name:
            raise OfflineLayoutError(f"topic {topic!r} carries feature group {writer.group.name!r}, but a "
                                     f"message at offset {offset} was added as group {group.name!r}")
        return writer

    def skip(self, group: FeatureGroup, topic: str, partition: int, offset: int) -> None:
        """A message that is no row (poison, dead-lettered): only its offset moves on."""
        key = (topic, partition)
        if key not in self._writers:
            self.resume(group, topic, partition)
        self._writers[key].skip(offset)

    def due(self) -> list[tuple[str, int]]:
        """(topic, partition) pairs whose buffers the rotation policy says to flush now."""
        now = self._clock()
        return [key for key, w in self._writers.items() if w.due(now) is not None]

    def flush(self, topic: str, partition: int, before_commit: RejectedHook | None = None) -> FlushResult:
        return self.flush_many([(topic, partition)], before_commit)[(topic, partition)]

    def flush_many(self, keys: list[tuple[str, int]], before_commit: RejectedHook | None = None
                   ) -> dict[tuple[str, int], FlushResult]:
        """Commit the batches of ``keys``: one upload and ONE snapshot per table (a table's
        partitions share its commits, so commits grow with tables, not partitions).

        Raises OffsetsMismatchError if a table refused a commit (every batch of that commit is
        forgotten; other tables' commits of this call may have happened)."""
        out: dict[tuple[str, int], FlushResult] = {}
        by_table: dict[str, list[Prepared]] = {}
        groups: dict[str, FeatureGroup] = {}
        flushing: list[tuple[tuple[str, int], PartitionWriter]] = []
        for key in keys:
            writer = self._writers.get(key)
            if writer is None or not writer.group.offline_enabled:
                if writer is not None:
                    writer.discard()
                out[key] = FlushResult([], 0, None)
                continue
            flushing.append((key, writer))
            if writer.group.version >= groups.get(writer.group.name, writer.group).version:
                groups[writer.group.name] = writer.group
        for key, writer in flushing:
            # One table's batches go into one file set and one snapshot, so they take one definition:
            # the newest any of them has seen. A partition that has not met a feature added while the
            # sink runs gives its rows nulls there, as its own older rows get once it meets it.
            writer.adopt(groups[writer.group.name])
            prepared = writer.prepare()
            if prepared is None:
                out[key] = FlushResult([], 0, None)
                continue
            by_table.setdefault(writer.group.name, []).append(prepared)
        for name, prepared in by_table.items():
            group = groups[name]
            out.update(flush_table(prepared, lambda group=group: self.tables.table(group),
                                   before_commit=before_commit, stage_hook=self._stage_hook))
        return out

    def discard(self, topic: str, partition: int) -> None:
        """Drop a partition's buffer (revoked, or its commit refused); redelivery brings the rows back."""
        writer = self._writers.pop((topic, partition), None)
        if writer is not None:
            writer.discard()

    def buffered_rows(self) -> int:
        return sum(w.buffered_rows for w in self._writers.values())
