"""Reading a group's stream back as decoded records (SDK ``stream()`` and CLI ``tail``).

Without a consumer group the reader assigns every partition itself (nothing is committed,
several readers never steal partitions from each other); with one, Kafka balances the
partitions among the group's members and offsets are committed as records are yielded.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, KafkaException, TopicPartition

from schemas.errors import ServiceUnavailableError, WireFormatError
from schemas.messages import Message
from schemas.wire import decode
from streams.kafka_client import FAST_DRAIN, KafkaTarget, confluent_conf
from streams.publisher import TopicMissingError


@dataclass(frozen=True)
class StreamRecord:
    """A decoded message and where it came from."""

    message: Message | None
    partition: int
    offset: int
    timestamp_ms: int
    error: str | None = None  # set (and message None) for bytes that are not a featurestream record


def read_stream(bootstrap: KafkaTarget, topic: str, *, start: str | int = "end", group_id: str | None = None,
                max_records: int | None = None, idle_timeout_s: float | None = None,
                timeout_s: float = 10.0) -> Iterator[StreamRecord]:
    """Yield records of ``topic``.

    ``start``: ``"end"`` (only new records), ``"beginning"``, or a timestamp in epoch
    milliseconds (the first record whose broker timestamp is at or after it).
    ``idle_timeout_s``: stop after that long without a record (None: follow forever).
    """
    conf = confluent_conf(bootstrap, {
        "group.id": group_id or "featurestream-tail",
        "enable.auto.commit": group_id is not None,
        "auto.offset.reset": "earliest" if start == "beginning" else "latest",
        "enable.partition.eof": False,
        "log_level": 0,
        **FAST_DRAIN,  # a read from the beginning is a backlog
    })
    consumer = Consumer(conf)
    try:
        try:
            md = consumer.list_topics(topic=topic, timeout=timeout_s)
        except KafkaException as exc:
            raise ServiceUnavailableError(f"Kafka at {bootstrap} did not answer within {timeout_s:.0f} s: "
                                          f"{exc}") from exc
        tmd = md.topics.get(topic)
        if tmd is None or tmd.error is not None or not tmd.partitions:
            raise TopicMissingError(f"Kafka topic {topic!r} does not exist on {bootstrap}")
        partitions = sorted(tmd.partitions)
        if group_id is None:
            consumer.assign(_start_positions(consumer, topic, partitions, start, timeout_s))
        else:
            consumer.subscribe([topic])
        yielded = 0
        last_seen = time.monotonic()
        while max_records is None or yielded < max_records:
            msg = consumer.poll(0.2)
            if msg is None:
                if idle_timeout_s is not None and time.monotonic() - last_seen > idle_timeout_s:
                    return
                continue
            last_seen = time.monotonic()
            if msg.error():
                raise ServiceUnavailableError(f"reading {topic!r} failed: {msg.error()}")
            try:
                decoded: Message | None = decode(msg.key(), msg.value(), msg.headers())
                error = None
            except WireFormatError as exc:
                decoded, error = None, str(exc)
            yielded += 1
            yield StreamRecord(decoded, msg.partition(), msg.offset(), msg.timestamp()[1], error)
    finally:
        consumer.close()


def _start_positions(consumer: Consumer, topic: str, partitions: list[int], start: str | int,
                     timeout_s: float) -> list[TopicPartition]:
    if start == "beginning":
        return [TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions]
    if start == "end":
        return [TopicPartition(topic, p, OFFSET_END) for p in partitions]
    if not isinstance(start, int):
        raise ValueError(f"start must be 'beginning', 'end' or epoch milliseconds, not {start!r}")
    found = consumer.offsets_for_times([TopicPartition(topic, p, start) for p in partitions], timeout=timeout_s)
    # A partition with no record at/after the timestamp answers -1: start at its end.
    return [TopicPartition(topic, tp.partition, tp.offset if tp.offset >= 0 else OFFSET_END) for tp in found]
