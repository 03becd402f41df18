"""OfflineWriter: the facade the offline sink's consumer loop drives. Independent of Kafka.

How the consumer must drive it (the exactly-once contract, see partition_writer.py)::

    writer = OfflineWriter(fs, root, RotationPolicy())
    consumer = Consumer({..., "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    # on_revoke / on_lost: writer.discard(topic, p) for each revoked partition (do NOT flush:
    # the new owner restarts from the committed offset and rewrites the same file names).
    while running:
        msg = consumer.poll(0.5)
        if msg is not None:
            writer.add(group_of(msg.topic()), decode(msg), msg.topic(), msg.partition(), msg.offset())
        for topic, p in writer.due():
            result = writer.flush(topic, p)          # files durable when this returns
            dead_letter(result.rejected)             # poison rows, if any
            if result.next_offset is not None:       # synchronous: the next batch must start here
                consumer.commit(offsets=[TopicPartition(topic, p, result.next_offset)],
                                asynchronous=False)
    # on shutdown: flush_all(), commit each, close.

If a commit fails, call ``discard`` for that partition and seek it back to the committed
offset (or restart): never flush further batches on top of an uncommitted one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from schemas.group import FeatureGroup
from schemas.messages import OFFLINE, DeleteMessage, PutMessage
from schemas.names import offline_table_uri
from sinks.offline.errors import OfflineLayoutError
from sinks.offline.partition_writer import FlushResult, PartitionWriter
from sinks.offline.rotation import RotationPolicy


def table_path_for(fs: Any, root_path: str, group: FeatureGroup) -> str:
    """The fs path of ``group``'s table: its resolved offline_uri, else ``<root>/<group>-<epoch>``."""
    if group.offline_uri:
        return fs._strip_protocol(group.offline_uri).rstrip("/")
    return offline_table_uri(root_path, group.name, group.creation_epoch)


class OfflineWriter:
    """One PartitionWriter per (topic, Kafka partition), created on first use."""

    def __init__(self, fs: Any, root_path: str, policy: RotationPolicy | None = None, *,
                 clock: Callable[[], float] = time.monotonic,
                 wall_clock_ns: Callable[[], int] = time.time_ns) -> None:
        self.fs = fs
        self.root_path = root_path.rstrip("/")
        self.policy = policy or RotationPolicy()
        self._clock = clock
        self._wall_ns = wall_clock_ns
        self._writers: dict[tuple[str, int], PartitionWriter] = {}

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
        key = (topic, partition)
        writer = self._writers.get(key)
        if writer is None:
            writer = PartitionWriter(self.fs, table_path_for(self.fs, self.root_path, group), group, topic,
                                     partition, self.policy, self._clock, self._wall_ns)
            self._writers[key] = writer
        elif writer.group.name != group.name:
            raise OfflineLayoutError(f"topic {topic!r} carries feature group {writer.group.name!r}, but a "
                                     f"message at offset {offset} was added as group {group.name!r}")
        keep = group.offline_enabled and OFFLINE in message.target_stores
        writer.add(group, message, offset, keep=keep)
        return keep

    def due(self) -> list[tuple[str, int]]:
        """(topic, partition) pairs whose buffers the rotation policy says to flush now."""
        now = self._clock()
        return [key for key, w in self._writers.items() if w.due(now) is not None]

    def flush(self, topic: str, partition: int) -> FlushResult:
        writer = self._writers.get((topic, partition))
        if writer is None:
            return FlushResult([], 0, None)
        return writer.flush()

    def flush_all(self) -> dict[tuple[str, int], FlushResult]:
        return {key: w.flush() for key, w in list(self._writers.items())}

    def discard(self, topic: str, partition: int) -> None:
        """Drop a partition's buffer (revoked, or its commit failed); redelivery brings the rows back."""
        writer = self._writers.pop((topic, partition), None)
        if writer is not None:
            writer.discard()

    def buffered_rows(self) -> int:
        return sum(w.buffered_rows for w in self._writers.values())
