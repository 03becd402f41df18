"""Consumer lag: how far a consumer group's committed offsets are behind the topics' ends."""

from __future__ import annotations

from collections.abc import Iterable

from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, KafkaException, TopicPartition

from schemas.errors import ServiceUnavailableError
from streams.admin import admin_client
from streams.kafka_client import KafkaTarget, confluent_conf

TP = tuple[str, int]


def committed_offsets(bootstrap: KafkaTarget, group_id: str, topics: Iterable[str], *,
                      timeout_s: float = 10.0) -> dict[TP, int]:
    """Committed next-offsets of ``group_id`` per (topic, partition); partitions never committed are absent."""
    admin = admin_client(bootstrap, timeout_s=timeout_s)
    topics = list(topics)
    if not topics:
        return {}
    try:
        md = admin.list_topics(timeout=timeout_s)
        tps = [TopicPartition(t, p) for t in topics if t in md.topics for p in md.topics[t].partitions]
        if not tps:
            return {}
        futures = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group_id, tps)],
                                                    request_timeout=timeout_s)
        result = futures[group_id].result(timeout=timeout_s)
    except KafkaException as exc:
        raise ServiceUnavailableError(f"Kafka at {bootstrap} did not answer for the committed offsets of "
                                      f"consumer group {group_id!r}: {exc}") from exc
    return {(tp.topic, tp.partition): tp.offset for tp in result.topic_partitions
            if tp.error is None and tp.offset >= 0}


def partition_lag(bootstrap: KafkaTarget, group_id: str, topics: Iterable[str], *, timeout_s: float = 10.0,
                  ) -> dict[TP, int]:
    """Records not yet committed by ``group_id``, per (topic, partition) of ``topics`` (a partition
    never committed counts whole, from its low watermark)."""
    topics = list(topics)
    committed = committed_offsets(bootstrap, group_id, topics, timeout_s=timeout_s)
    admin = admin_client(bootstrap, timeout_s=timeout_s)
    try:
        md = admin.list_topics(timeout=timeout_s)
    except KafkaException as exc:
        raise ServiceUnavailableError(f"Kafka at {bootstrap} did not answer: {exc}") from exc
    probe = Consumer(confluent_conf(bootstrap, {"group.id": f"{group_id}-lag-probe",
                                                 "enable.auto.commit": False, "log_level": 0}))
    try:
        lag: dict[TP, int] = {}
        for topic in topics:
            if topic not in md.topics:
                continue
            for p in md.topics[topic].partitions:
                low, high = probe.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout_s, cached=False)
                lag[(topic, p)] = max(0, high - committed.get((topic, p), low))
        return lag
    finally:
        probe.close()

