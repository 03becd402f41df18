"""Resuming an ingest that Kafka did not fully acknowledge, without publishing a row twice.

When a broker dies, the records it had already written but not yet acknowledged are "possibly
persisted": the producer cannot tell them from the lost ones (librdkafka's delivery report says
only "timed out"), so an ingest reports both as not acknowledged. Publishing those rows again
blindly would duplicate the ones that did land.

Every record of one ingest call carries the same ``fs-api-invocation-time`` header (see
docs/wire-format.md), and its key and value are a pure function of the row. A resumed ingest
re-encodes the unacknowledged rows with that same invocation time, reads what the earlier
attempt left on the topic (from the invocation time on, filtered by the header), and publishes
only the rows not found there: the topic then holds each row once, as if the first attempt had
succeeded.

Rows that are byte-for-byte identical within one ingest (same identifier, event time, values,
target stores and TTL) are indistinguishable on the topic: they are counted, not told apart.
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter

from confluent_kafka import Consumer, KafkaException, TopicPartition

from schemas.errors import ServiceUnavailableError
from schemas.wire import H_API_TIME
from streams.kafka_client import KafkaTarget, confluent_conf

# Records carry the broker's append time (LogAppendTime; the producer's send time on older topics), at or
# after the ingest's invocation time; the scan starts this much earlier so that clock skew between the
# writing host and the broker cannot hide any.
CLOCK_SLACK_MS = 5 * 60 * 1000


def record_digest(key: bytes, value: bytes) -> bytes:
    """What identifies a record of one ingest on the topic (its header is checked separately)."""
    return hashlib.blake2b(len(key).to_bytes(4, "big") + key + value, digest_size=16).digest()


def published_by(bootstrap: KafkaTarget, topic: str, api_invocation_time_ns: int, *,
                 timeout_s: float) -> Counter[bytes]:
    """Digests (``record_digest``) of the records on ``topic`` written by the ingest call with this
    invocation time, up to the topic's current end, counted."""
    header = str(api_invocation_time_ns).encode()
    consumer = Consumer(confluent_conf(bootstrap, {"group.id": "featurestream-ingest-resume",
                                                   "enable.auto.commit": False, "enable.partition.eof": False,
                                                   "log_level": 0}))
    deadline = time.monotonic() + timeout_s
    try:
        try:
            md = consumer.list_topics(topic=topic, timeout=timeout_s)
            parts = sorted(md.topics[topic].partitions) if topic in md.topics else []
            since = max(0, api_invocation_time_ns // 1_000_000 - CLOCK_SLACK_MS)
            starts = consumer.offsets_for_times([TopicPartition(topic, p, since) for p in parts], timeout=timeout_s)
            ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout_s)[1] for p in parts}
        except KafkaException as exc:
            raise ServiceUnavailableError(f"Kafka at {bootstrap} did not answer while looking for the rows an "
                                          f"earlier ingest left on {topic!r}: {exc}") from exc
        # offsets_for_times answers -1 for a partition with nothing that recent: nothing to read there.
        todo = {tp.partition: tp.offset for tp in starts if 0 <= tp.offset < ends[tp.partition]}
        found: Counter[bytes] = Counter()
        if not todo:
            return found
        consumer.assign([TopicPartition(topic, p, off) for p, off in todo.items()])
        while todo:
            if time.monotonic() > deadline:
                raise ServiceUnavailableError(f"could not read {topic!r} up to its end within {timeout_s:g} s to "
                                              "find the rows an earlier ingest left there")
            for msg in consumer.consume(1000, timeout=0.5):
                if msg.error():
                    continue
                p = msg.partition()
                if p not in todo or msg.offset() >= ends[p]:
                    continue
                if dict(msg.headers() or ()).get(H_API_TIME) == header:
                    found[record_digest(msg.key() or b"", msg.value() or b"")] += 1
                if msg.offset() + 1 >= ends[p]:
                    del todo[p]
        return found
    finally:
        consumer.close()
