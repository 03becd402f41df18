"""Replay: re-read a group's topic (from the start or a time, up to now or a time) into a sink.

Reads with a plain consumer in its own throwaway consumer group (assigning partitions, so it
never disturbs the "online" or "offline" groups), stops at the end offsets it saw when it
started, and hands batches to the same apply function the live path uses, so a replay obeys
the same idempotent rules (write-if-newer online, coordinate-named files offline).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaException, TopicPartition

from schemas.errors import ServiceUnavailableError
from streams.publisher import TopicMissingError
from streams.route import RawMessage, raw_from_confluent


@dataclass
class ReplayResult:
    topic: str
    records: int = 0
    seconds: float = 0.0


def replay_topic(bootstrap: str, topic: str, apply_batch: Callable[[list[RawMessage]], object], *,
                 from_ms: int | None = None, to_ms: int | None = None, batch_size: int = 2000,
                 progress: bool = True, timeout_s: float = 10.0) -> ReplayResult:
    """Feed ``topic``'s records with broker timestamp in [from_ms, to_ms) to ``apply_batch``."""
    started = time.perf_counter()
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"featurestream-replay-{time.time_ns()}",
                         "enable.auto.commit": False, "enable.partition.eof": False, "log_level": 0,
                         "fetch.max.bytes": 52_428_800})
    result = ReplayResult(topic)
    bar = None
    try:
        try:
            md = consumer.list_topics(topic=topic, timeout=timeout_s)
        except KafkaException as exc:
            raise ServiceUnavailableError(f"Kafka at {bootstrap} did not answer: {exc}") from exc
        tmd = md.topics.get(topic)
        if tmd is None or tmd.error is not None or not tmd.partitions:
            raise TopicMissingError(f"Kafka topic {topic!r} does not exist on {bootstrap}")
        starts: dict[int, int] = {}
        ends: dict[int, int] = {}
        for p in tmd.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout_s, cached=False)
            starts[p], ends[p] = low, high
        for bound, target in ((from_ms, starts), (to_ms, ends)):
            if bound is None:
                continue
            found = consumer.offsets_for_times([TopicPartition(topic, p, bound) for p in tmd.partitions],
                                               timeout=timeout_s)
            for tp in found:
                # -1: no record at/after the time: the partition's end
                target[tp.partition] = tp.offset if tp.offset >= 0 else ends[tp.partition]
        todo = {p: (starts[p], ends[p]) for p in tmd.partitions if ends[p] > starts[p]}
        total = sum(e - s for s, e in todo.values())
        if progress and sys.stderr.isatty() and total:
            from tqdm import tqdm

            bar = tqdm(total=total, unit="rec", desc=f"replay {topic}", file=sys.stderr)
        if not todo:
            return result
        consumer.assign([TopicPartition(topic, p, s) for p, (s, _) in todo.items()])
        remaining = dict(todo)
        idle_deadline = time.monotonic() + max(timeout_s, 30.0)
        while remaining:
            msgs = consumer.consume(num_messages=batch_size, timeout=0.5)
            if not msgs:
                if time.monotonic() > idle_deadline:
                    raise ServiceUnavailableError(f"replay of {topic!r} stalled: no records for "
                                                  f"{max(timeout_s, 30.0):.0f} s with {len(remaining)} "
                                                  "partition(s) unfinished")
                continue
            idle_deadline = time.monotonic() + max(timeout_s, 30.0)
            batch = []
            for m in msgs:
                if m.error():
                    raise ServiceUnavailableError(f"replay of {topic!r} failed: {m.error()}")
                p = m.partition()
                if p not in remaining:
                    continue
                if m.offset() < remaining[p][1]:
                    batch.append(raw_from_confluent(m))
                if m.offset() + 1 >= remaining[p][1]:
                    del remaining[p]
            if batch:
                apply_batch(batch)
                result.records += len(batch)
                if bar is not None:
                    bar.update(len(batch))
        return result
    finally:
        if bar is not None:
            bar.close()
        consumer.close()
        result.seconds = time.perf_counter() - started
