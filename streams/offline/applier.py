"""The offline apply step: route raw batches into the OfflineWriter, dead-letter the poison.

Implements ``streams.consume_loop.PartitionSink`` for the sink's consume-and-commit loop
(``worker.py``), and is driven by ``streams/replay.py`` for offline replay.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from schemas.group import FeatureGroup
from schemas.names import group_from_topic
from schemas.wire import encode
from sinks.offline.columns import ColumnRows, view_rows
from sinks.offline.errors import OfflineRowError
from sinks.offline.partition_writer import FlushResult
from sinks.offline.writer import OfflineWriter
from streams.consume_loop import TP
from streams.deadletter import DeadLetters
from streams.freshness import FRESHNESS, count_batch, header_time_ns
from streams.group_view import GroupView
from streams.metrics import OFFLINE_METRICS
from streams.route import (
    COLUMNS_MIN_ROWS,
    GroupRows,
    Poison,
    RawMessage,
    Routed,
    RoutedColumns,
    route_batch,
    route_batch_columns,
)

log = logging.getLogger("featurestream.offline")
OFFLINE_STORE = "OfflineStore"
BEGINNING = -2  # confluent_kafka.OFFSET_BEGINNING: the table holds nothing of the partition yet


class _RawIndex:
    """A batch's raw messages by (topic, partition, offset), indexed at the first lookup: only rows
    judged one by one look theirs up, and a batch whose rows all went in as proven blocks (the usual
    case) never builds the index. Built on every batch, that dict took ~5 % of the sink's main
    thread (py-spy, 500k-row backlog)."""

    def __init__(self, batch: list[RawMessage]) -> None:
        self._batch = batch
        self._index: dict[tuple[str, int, int], RawMessage] | None = None

    def __getitem__(self, coords: tuple[str, int, int]) -> RawMessage:
        if self._index is None:
            self._index = {(r.topic, r.partition, r.offset): r for r in self._batch}
        return self._index[coords]


class OfflineApplier:
    """Routes raw batches into the OfflineWriter; implements streams.consume_loop.PartitionSink."""

    def __init__(self, groups: GroupView, writer: OfflineWriter,
                 deadletters: DeadLetters | None, prefix: str, *,
                 after_flush: Callable[[FlushResult], None] | None = None, freshness: bool = True,
                 batch_decode: bool = True, columns_from: int = COLUMNS_MIN_ROWS) -> None:
        self._groups = groups
        # batch_decode: each topic's messages decoded in one call into columns (schemas/batch.py),
        # only unproven rows judged one by one; a topic with fewer than columns_from messages in the
        # batch is judged per record (streams/route.py: the columns' fixed cost). False: every
        # message judged one by one (the reference the differential test compares the batch path with).
        self.batch_decode = batch_decode
        self.columns_from = columns_from
        self._after_flush = after_flush  # tests crash the process here: files durable, offsets not committed
        self.writer = writer
        self.deadletters = deadletters
        self.prefix = prefix
        self._held: set[TP] = set()  # partitions with rows added since their last flush
        self.poison_count = 0
        # fs-api-invocation-time of the rows added per partition since its last flush, observed as
        # freshness when the flush commits them (False: a replay, whose records are old by design).
        self._api_times: dict[TP, list[int]] | None = {} if freshness else None

    def add(self, batch: list[RawMessage]) -> None:
        routed: Routed
        if self.batch_decode:
            routed, groups = route_batch_columns(batch, self._groups, prefix=self.prefix, store=OFFLINE_STORE,
                                                 columns_from=self.columns_from)
        else:
            routed, groups = route_batch(batch, self._groups, prefix=self.prefix, store=OFFLINE_STORE)
        poison = list(routed.poison)
        by_coords = _RawIndex(batch)
        # In offset order per partition: poison of a known offline group advances the table's
        # offsets too (the writer skips it), so a restart does not dead-letter it again.
        steps: dict[TP, list[tuple[int, Any, Any]]] = {}
        for name, items in routed.work.items():
            group = groups[name]
            topic = group.topic(self.prefix)
            for msg, partition, offset in items:
                steps.setdefault((topic, partition), []).append((offset, group, msg))
        for p in routed.poison:
            name = group_from_topic(self.prefix, p.raw.topic)
            group = groups.get(name) if name else None
            if group is not None and group.offline_enabled and group.topic(self.prefix) == p.raw.topic:
                steps.setdefault((p.raw.topic, p.raw.partition), []).append((p.raw.offset, group, None))
        blocks = _proven_blocks(routed.rows) if isinstance(routed, RoutedColumns) else {}
        for tp in sorted(steps.keys() | blocks.keys()):
            topic, partition = tp
            todo = sorted(steps.get(tp, ()), key=lambda s: s[0])
            block = blocks.get(tp)
            # Proven rows go in as runs, cut where a per-record message or a skip sits between them.
            cuts = np.searchsorted(block[1].offsets, [s[0] for s in todo]).tolist() if block else []
            done = 0
            for k, (offset, group, msg) in enumerate(todo):
                if block is not None and cuts[k] > done:
                    self._add_rows(block[0], topic, partition, block[1].slice(done, cuts[k]))
                    done = cuts[k]
                if msg is None:
                    self.writer.skip(group, topic, partition, offset)
                    continue
                try:
                    self.writer.add(group, msg, topic, partition, offset)
                except OfflineRowError as exc:  # e.g. an event time outside years 1-9999
                    poison.append(Poison(by_coords[(topic, partition, offset)], str(exc)))
                    continue
                self._held.add(tp)
                if self._api_times is not None:
                    raw = by_coords[(topic, partition, offset)]
                    self._api_times.setdefault(tp, []).append(header_time_ns(raw.headers))
            if block is not None and done < len(block[1]):
                self._add_rows(block[0], topic, partition, block[1].slice(done, len(block[1])))
        self._dead_letter(poison)

    def _add_rows(self, group: FeatureGroup, topic: str, partition: int, chunk: ColumnRows) -> None:
        if self.writer.add_rows(group, topic, partition, chunk):
            self._held.add((topic, partition))
            if self._api_times is not None:  # the header's time, as header_time_ns reads it per message
                times = chunk.source.api_invocation_time_ns[chunk.source_rows]
                self._api_times.setdefault((topic, partition), []).extend(times.tolist())

    def _dead_letter(self, poison: list[Poison]) -> None:
        if not poison:
            return
        for p in poison:
            log.warning("dead-lettering %s[%d]@%d: %s", p.raw.topic, p.raw.partition, p.raw.offset, p.reason)
        self.poison_count += len(poison)
        if self.deadletters is not None:
            self.deadletters.send(poison)  # synchronous: durable before the offset is committed
        OFFLINE_METRICS.dead_lettered.inc(len(poison))

    def resume(self, topic: str, partition: int) -> int | None:
        """Where the partition's next batch starts: the next offset the group's table records,
        BEGINNING if it records none; None for a topic without an offline table (an unknown or
        online-only group: nothing there can be doubled, so the consumer group's offset does)."""
        name = group_from_topic(self.prefix, topic)
        group = self._groups.all().get(name) if name else None
        if name and (group is None or group.topic(self.prefix) != topic):
            group = self._groups.all(fresh=True).get(name)
        self._forget_times(topic, partition)
        self._held.discard((topic, partition))
        # Another life's topic (schemas.names.group_topic) has no rows in this life's table either.
        if group is None or not group.offline_enabled or group.topic(self.prefix) != topic:
            self.writer.discard(topic, partition)
            return None
        start = self.writer.resume(group, topic, partition)
        return BEGINNING if start is None else start

    def due(self) -> list[TP]:
        return self.writer.due()

    def holds(self, topic: str, partition: int) -> bool:
        return (topic, partition) in self._held

    def held(self) -> list[TP]:
        """The partitions with rows added since their last flush, in order."""
        return sorted(self._held)

    def flush(self, topic: str, partition: int) -> FlushResult:
        return self.flush_many([(topic, partition)])[(topic, partition)]

    def flush_many(self, partitions: list[TP]) -> dict[TP, FlushResult]:
        """Commit the partitions' batches, one snapshot per table (see OfflineWriter.flush_many)."""
        started = time.perf_counter()
        try:
            results = self.writer.flush_many(list(partitions), before_commit=self._dead_letter_rejected)
        finally:
            self._held.difference_update(partitions)
        elapsed = time.perf_counter() - started
        for (topic, _), result in results.items():
            group = group_from_topic(self.prefix, topic) or ""
            if result.files:
                OFFLINE_METRICS.flush_seconds.observe(elapsed)
                OFFLINE_METRICS.files_written.labels(group=group).inc(len(result.files))
            if result.rows:
                OFFLINE_METRICS.rows_written.labels(group=group).inc(result.rows)
        self._observe_freshness(results)
        if self._after_flush is not None:
            for result in results.values():
                self._after_flush(result)
        return results

    def _dead_letter_rejected(self, rejected: list) -> None:
        """Dead-letter rows a flush could not write, before their offsets are committed.

        The raw bytes are gone by now (only decoded messages are buffered): re-encode them in
        the wire format, which decodes to the same message."""
        poison = []
        for (msg, t, p, offset), exc in rejected:
            value, key, headers = _encoded(msg)
            poison.append(Poison(RawMessage(t, p, offset, key, value, headers), str(exc)))
        self._dead_letter(poison)

    def discard(self, topic: str, partition: int) -> None:
        self.writer.discard(topic, partition)
        self._held.discard((topic, partition))
        self._forget_times(topic, partition)

    def _forget_times(self, topic: str, partition: int) -> None:
        if self._api_times is not None:
            self._api_times.pop((topic, partition), None)

    def _observe_freshness(self, results: dict[TP, FlushResult]) -> None:
        """Each committed row's publish-to-committed latency, one histogram addition per partition.
        (Rows the flush rejected are dead-lettered and not committed; they are rare and counted too.)"""
        if self._api_times is None:
            return
        now = time.time_ns()
        for (topic, partition), result in results.items():
            times = self._api_times.pop((topic, partition), None)
            if not times or not result.rows:
                continue
            counts = count_batch(times, now)
            if counts is not None:
                FRESHNESS.add("offline", group_from_topic(self.prefix, topic) or "", counts)


def _proven_blocks(rows: dict[str, GroupRows]) -> dict[TP, tuple[FeatureGroup, ColumnRows]]:
    """The proven rows of each (topic, partition), in offset order, as offline rows."""
    out: dict[TP, tuple[FeatureGroup, ColumnRows]] = {}
    for sel in rows.values():
        order = np.lexsort((sel.offsets, sel.partitions))
        parts = sel.partitions[order]
        table = view_rows(sel.columns, sel.rows[order], sel.topic, parts, sel.offsets[order],
                          sel.api_invocation_time_ns[order])
        chunk = ColumnRows(table, sel.offsets[order], sel.columns, sel.rows[order])
        bounds = np.flatnonzero(np.diff(parts)) + 1
        for start, stop in zip([0, *bounds.tolist()], [*bounds.tolist(), len(parts)], strict=True):
            out[(sel.topic, int(parts[start]))] = (sel.group, chunk.slice(start, stop))
    return out


def _encoded(msg: Any) -> tuple[bytes, bytes | None, list[tuple[str, bytes]]]:
    """(value, key, headers) of a buffered message, as close to the original bytes as possible."""
    try:
        key, value, headers = encode(msg)
    except (TypeError, ValueError):  # a value JSON cannot carry (what got it rejected): keep its text
        return repr(msg).encode("utf-8", "replace")[:100_000], str(msg.id).encode(), []
    return value, key, headers
