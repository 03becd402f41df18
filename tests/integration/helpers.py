"""Shared helpers for integration tests: groups, waiting on conditions with deadlines."""

from __future__ import annotations

import time
from typing import TypeVar

from schemas.group import FeatureGroup
from schemas.ttl import Ttl
from schemas.types import CollectionType, FeatureDefinition, ScalarType

T = TypeVar("T")


def customers_group(name: str, *, ttl: Ttl | None = None, partitions: int = 3, online: bool = True,
                    offline: bool = True) -> FeatureGroup:
    """A 10-feature group of mixed types (the shape the benchmarks use too)."""
    feats = (
        FeatureDefinition("customer_id", ScalarType.STRING),
        FeatureDefinition("event_time", ScalarType.STRING),
        FeatureDefinition("age", ScalarType.INTEGRAL),
        FeatureDefinition("score", ScalarType.FRACTIONAL),
        FeatureDefinition("city", ScalarType.STRING),
        FeatureDefinition("visits", ScalarType.INTEGRAL),
        FeatureDefinition("balance", ScalarType.FRACTIONAL),
        FeatureDefinition("segment", ScalarType.STRING),
        FeatureDefinition("tags", ScalarType.STRING, CollectionType.LIST),
        FeatureDefinition("embedding", ScalarType.FRACTIONAL, CollectionType.VECTOR, 4),
    )
    return FeatureGroup(name=name, record_identifier_name="customer_id", event_time_name="event_time",
                        features=feats, ttl=ttl, partitions=partitions, online_enabled=online,
                        offline_enabled=offline)


def customer(i: int, *, second: int = 0, age: int | None = None) -> dict:
    return {
        "customer_id": f"c{i}", "event_time": f"2031-01-01T00:{(second // 60) % 60:02d}:{second % 60:02d}Z",
        "age": 20 + i % 50 if age is None else age, "score": i / 7, "city": "Lyon", "visits": i,
        "balance": 10.5 * i, "segment": "gold" if i % 2 else "silver", "tags": ["a", str(i)],
        "embedding": [0.1, 0.2, 0.3, float(i)],
    }


def read_topic(stack, topic: str, *, timeout_s: float = 60.0) -> list:
    """Every message of ``topic`` up to its current end offsets, read with plain confluent-kafka
    (independently of featurestream's own consumers). A missing topic reads as empty."""
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": stack.kafka_bootstrap, "group.id": "t-independent-reader",
                  "enable.auto.commit": False})
    try:
        md = c.list_topics(topic=topic, timeout=10)
        if topic not in md.topics or md.topics[topic].error is not None:
            return []
        parts = sorted(md.topics[topic].partitions)
        ends = {p: _end_offset(c, TopicPartition(topic, p)) for p in parts}
        todo = {p for p in parts if ends[p] > 0}
        c.assign([TopicPartition(topic, p, 0) for p in todo])
        out = []
        deadline = time.monotonic() + timeout_s
        while todo and time.monotonic() < deadline:
            for m in c.consume(1000, timeout=0.5):
                if m.error() or m.partition() not in todo:
                    continue
                if m.offset() < ends[m.partition()]:
                    out.append(m)
                if m.offset() + 1 >= ends[m.partition()]:
                    todo.discard(m.partition())
        assert not todo, f"could not read {topic} to its end within {timeout_s:.0f} s"
        return out
    finally:
        c.close()


def _end_offset(consumer, tp) -> int:
    """The partition's end offset; a topic created moments ago may not have its leader yet
    (NOT_LEADER_FOR_PARTITION / LEADER_NOT_AVAILABLE), which is retried, not read as a failure."""
    from confluent_kafka import KafkaError, KafkaException

    from tests.support.wait import wait_for

    transient = {KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE,
                 KafkaError.UNKNOWN_TOPIC_OR_PART}

    def end() -> tuple[int] | None:
        try:
            return (consumer.get_watermark_offsets(tp, timeout=10)[1],)
        except KafkaException as exc:
            if exc.args[0].code() in transient:
                return None
            raise

    return wait_for(end, timeout_s=30, interval_s=0.2, what=f"a leader for {tp.topic}[{tp.partition}]")[0]


def dead_letters(stack, source_topic: str, stage: str | None = None) -> list[tuple[str, str]]:
    """(stage, reason) of every dead letter of ``source_topic`` (optionally of one stage), read with
    plain confluent-kafka from the dead-letter topic; empty when it does not exist."""
    from schemas.names import deadletter_topic

    out = []
    for m in read_topic(stack, deadletter_topic(stack.topic_prefix)):
        h = {k: v for k, v in m.headers() or []}
        if h.get("fs-dlq-source-topic") != source_topic.encode():
            continue
        if stage is None or h.get("fs-dlq-stage") == stage.encode():
            out.append((h["fs-dlq-stage"].decode(), h["fs-dlq-reason"].decode(errors="replace")))
    return out
