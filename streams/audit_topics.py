"""What the auditor reads from Kafka: a group topic from its start, the dead-letter topic, single records.

Plain confluent-kafka consumers with partitions assigned (never subscribed), in a consumer group of
their own that commits nothing, so reading never moves the processors' or sinks' positions.
Reading is incremental: each call goes on from where the previous one stopped, up to the end
offsets seen at the start of the call.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition

from schemas.errors import ServiceUnavailableError
from schemas.names import deadletter_topic
from streams.kafka_client import FAST_DRAIN, KafkaTarget, confluent_conf
from streams.route import RawMessage, raw_from_confluent

TP = tuple[str, int]


def _consumer(bootstrap: KafkaTarget) -> Consumer:
    return Consumer(confluent_conf(bootstrap, {
        "group.id": f"featurestream-audit-{time.time_ns()}", "enable.auto.commit": False,
        "enable.partition.eof": False, "log_level": 0, "auto.offset.reset": "earliest",
        **FAST_DRAIN}))  # the first read of a topic is all of it


class TopicTail:
    """Reads one topic from each partition's start, a little more at every :meth:`read_to_end`."""

    def __init__(self, bootstrap: KafkaTarget, topic: str, *, timeout_s: float = 10.0) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.timeout_s = timeout_s
        self.next: dict[int, int] = {}   # partition -> next offset to read
        self.low: dict[int, int] = {}    # partition -> low watermark when first seen
        self._consumer = _consumer(bootstrap)

    def close(self) -> None:
        self._consumer.close()

    def watermarks(self) -> dict[int, tuple[int, int]]:
        """(low, high) of every partition of the topic (partitions added later included)."""
        try:
            md = self._consumer.list_topics(topic=self.topic, timeout=self.timeout_s)
            tmd = md.topics.get(self.topic)
            if tmd is None or tmd.error is not None:
                return {}
            return {p: self._consumer.get_watermark_offsets(TopicPartition(self.topic, p), timeout=self.timeout_s,
                                                            cached=False) for p in tmd.partitions}
        except KafkaException as exc:
            raise ServiceUnavailableError(f"Kafka at {self.bootstrap} did not answer while the auditor read "
                                          f"topic {self.topic!r}: {exc}") from exc

    def read_to_end(self) -> Iterator[RawMessage]:
        """Every message from where the last call stopped to the end offsets of now, per partition in order."""
        for batch in self.read_batches_to_end():
            for m in batch:
                yield raw_from_confluent(m)

    def read_batches_to_end(self) -> Iterator[list[Any]]:
        """:meth:`read_to_end` as lists of confluent_kafka messages, as consumed (for a reader that
        takes only some of each message's parts: making a RawMessage of each costs more than that)."""
        marks = self.watermarks()
        for p, (low, _high) in marks.items():
            self.low.setdefault(p, low)
            self.next.setdefault(p, low)
        todo = {p: high for p, (_low, high) in marks.items() if high > self.next[p]}
        if not todo:
            return
        self._consumer.assign([TopicPartition(self.topic, p, self.next[p]) for p in todo])
        deadline = time.monotonic() + max(30.0, self.timeout_s)
        try:
            while todo:
                msgs = self._consumer.consume(num_messages=5000, timeout=0.5)
                if not msgs:
                    if time.monotonic() > deadline:
                        raise ServiceUnavailableError(
                            f"the auditor could not read topic {self.topic!r} to its end: partitions "
                            f"{sorted(todo)} stalled at offsets {[self.next[p] for p in sorted(todo)]}")
                    continue
                deadline = time.monotonic() + max(30.0, self.timeout_s)
                batch = []
                failed = None
                for m in msgs:
                    if m.error():
                        failed = m.error()
                        break
                    p, o = m.partition(), m.offset()
                    if p not in todo or o < self.next[p]:
                        continue
                    if o < todo[p]:
                        self.next[p] = o + 1
                        batch.append(m)
                    if o + 1 >= todo[p]:
                        self.next[p] = max(self.next[p], todo.pop(p))
                if batch:
                    yield batch  # before failing: ``next`` has moved past these
                if failed is not None:
                    raise ServiceUnavailableError(f"the auditor failed reading {self.topic!r}: {failed}")
        finally:
            self._consumer.unassign()


@dataclass(frozen=True, slots=True)
class DeadLetter:
    stage: str
    record_id: str | None
    reason: str


class DeadLetterIndex:
    """The dead-letter topic by source position: which records each stage parked, and why."""

    def __init__(self, bootstrap: KafkaTarget, prefix: str) -> None:
        self._tail = TopicTail(bootstrap, deadletter_topic(prefix))
        self.by_position: dict[tuple[str, int, int], list[DeadLetter]] = {}
        self.ids: dict[tuple[str, str], set[str]] = {}   # (source topic, stage) -> record ids

    def close(self) -> None:
        self._tail.close()

    def catch_up(self) -> None:
        for raw in self._tail.read_to_end():
            h = {k: (v or b"").decode("utf-8", "replace") for k, v in (raw.headers or [])}
            try:
                pos = (h["fs-dlq-source-topic"], int(h["fs-dlq-source-partition"]), int(h["fs-dlq-source-offset"]))
            except (KeyError, ValueError):
                continue  # not one of ours
            rid = raw.key.decode("utf-8", "replace") if raw.key is not None else None
            letter = DeadLetter(h.get("fs-dlq-stage", ""), rid, h.get("fs-dlq-reason", ""))
            self.by_position.setdefault(pos, []).append(letter)
            if rid is not None:
                self.ids.setdefault((pos[0], letter.stage), set()).add(rid)

    def offsets(self, topic: str, partition: int, stages: Iterable[str]) -> set[int]:
        wanted = set(stages)
        return {o for (t, p, o), letters in self.by_position.items()
                if t == topic and p == partition and any(x.stage in wanted for x in letters)}

    def has_id(self, topic: str, record_id: str, stages: Iterable[str]) -> bool:
        return any(record_id in self.ids.get((topic, s), ()) for s in stages)


def fetch_messages(bootstrap: KafkaTarget, topic: str, positions: Iterable[tuple[int, int]], *,
                   timeout_s: float = 30.0) -> dict[tuple[int, int], RawMessage]:
    """The messages at ``positions`` ((partition, offset) pairs) of ``topic``; absent ones are missing
    from the answer (gone by retention)."""
    wanted: dict[int, set[int]] = {}
    for p, o in positions:
        wanted.setdefault(p, set()).add(o)
    out: dict[tuple[int, int], RawMessage] = {}
    consumer = _consumer(bootstrap)
    try:
        for p, offsets in wanted.items():
            # One assignment per run of offsets close together: a seek costs a fetch, a read-through
            # of a few hundred records costs less.
            for first in _runs(sorted(offsets)):
                consumer.assign([TopicPartition(topic, p, first[0])])
                todo = set(first)
                deadline = time.monotonic() + timeout_s
                while todo and time.monotonic() < deadline:
                    for m in consumer.consume(num_messages=500, timeout=0.5):
                        if m.error() or m.partition() != p:
                            continue
                        if m.offset() in todo:
                            out[(p, m.offset())] = raw_from_confluent(m)
                            todo.discard(m.offset())
                        if m.offset() >= first[-1]:
                            todo.clear()
                consumer.unassign()
    finally:
        consumer.close()
    return out


def _runs(offsets: list[int], gap: int = 500) -> list[list[int]]:
    runs: list[list[int]] = []
    for o in offsets:
        if runs and o - runs[-1][-1] <= gap:
            runs[-1].append(o)
        else:
            runs.append([o])
    return runs
