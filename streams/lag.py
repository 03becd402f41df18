"""Consumer lag: how far a consumer group's committed offsets are behind the topics' ends."""

from __future__ import annotations

from collections.abc import Iterable

from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, KafkaException, TopicPartition

from schemas.errors import ServiceUnavailableError
from streams.admin import admin_client


def consumer_lag(bootstrap: str, group_id: str, topics: Iterable[str], *, timeout_s: float = 10.0,
                 ) -> dict[str, int]:
    """Records not yet committed by ``group_id``, per topic (a partition never committed counts whole)."""
    admin = admin_client(bootstrap, timeout_s=timeout_s)
    topics = list(topics)
    if not topics:
        return {}
    try:
        md = admin.list_topics(timeout=timeout_s)
    except KafkaException as exc:
        raise ServiceUnavailableError(f"Kafka at {bootstrap} did not answer: {exc}") from exc
    tps = [TopicPartition(t, p) for t in topics if t in md.topics for p in md.topics[t].partitions]
    if not tps:
        return {}
    futures = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group_id, tps)],
                                                request_timeout=timeout_s)
    committed = {(tp.topic, tp.partition): tp.offset
                 for tp in futures[group_id].result(timeout=timeout_s).topic_partitions}
    probe = Consumer({"bootstrap.servers": bootstrap, "group.id": f"{group_id}-lag-probe",
                      "enable.auto.commit": False, "log_level": 0})
    try:
        lag: dict[str, int] = {}
        for tp in tps:
            low, high = probe.get_watermark_offsets(tp, timeout=timeout_s, cached=False)
            pos = committed.get((tp.topic, tp.partition), -1)
            start = pos if pos >= 0 else low
            lag[tp.topic] = lag.get(tp.topic, 0) + max(0, high - start)
        return lag
    finally:
        probe.close()
