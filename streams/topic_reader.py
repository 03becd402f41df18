"""Reading a topic from given offsets up to its end as of the start of the read, then stopping.

Bounded: the end offsets are taken once, before reading, so records arriving meanwhile are not
waited for; a partition is finished when a record at or past its end arrives or when the
consumer reports it reached the partition's end (which also covers transaction markers and
aborted records, never delivered as messages). A broker that stops answering fails the read after
``timeout_s`` without progress instead of hanging.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator, Mapping

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from schemas.errors import ServiceUnavailableError
from streams.kafka_client import FAST_DRAIN, KafkaTarget, confluent_conf
from streams.route import RawMessage, raw_from_confluent

_TRANSIENT = {KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE, KafkaError._TIMED_OUT,
              KafkaError._TRANSPORT}
PROGRESS_MIN = 2_000  # records: shorter reads show no progress bar


def _consumer(bootstrap: KafkaTarget) -> Consumer:
    return Consumer(confluent_conf(bootstrap, {
        "group.id": "featurestream-topic-reader",  # required by librdkafka; never joined nor committed
        "enable.auto.commit": False,
        "enable.partition.eof": True,
        "log_level": 0,
        **FAST_DRAIN,  # it reads whole topics
    }))


def end_offsets(bootstrap: KafkaTarget, topic: str, *, timeout_s: float = 10.0) -> dict[int, tuple[int, int]] | None:
    """partition -> (low, high) watermark of ``topic``; None if the topic does not exist."""
    consumer = _consumer(bootstrap)
    try:
        return _watermarks(consumer, bootstrap, topic, timeout_s)
    finally:
        consumer.close()


def _watermarks(consumer: Consumer, bootstrap: KafkaTarget, topic: str,
                timeout_s: float) -> dict[int, tuple[int, int]] | None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            md = consumer.list_topics(topic=topic, timeout=timeout_s)
            tmd = md.topics.get(topic)
            if tmd is None or tmd.error is not None and tmd.error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                return None
            if tmd.error is not None:
                raise KafkaException(tmd.error)
            return {p: tuple(consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout_s,
                                                            cached=False))
                    for p in sorted(tmd.partitions)}
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            if time.monotonic() < deadline and isinstance(err, KafkaError) and err.code() in _TRANSIENT:
                time.sleep(0.2)
                continue
            raise ServiceUnavailableError(f"Kafka at {bootstrap} did not answer for topic {topic!r} within "
                                          f"{timeout_s:g} s: {exc}") from exc


def read_to_end(bootstrap: KafkaTarget, topic: str, *, start: Mapping[int, int] | None = None,
                timeout_s: float = 10.0, progress: bool = False, what: str | None = None) -> Iterator[RawMessage]:
    """Every record of ``topic`` from ``start`` (partition -> offset; default: the beginning) up to
    the end offsets of the moment the read began. A missing topic reads as empty."""
    consumer = _consumer(bootstrap)
    bar = None
    try:
        marks = _watermarks(consumer, bootstrap, topic, timeout_s)
        if not marks:
            return
        todo: dict[int, tuple[int, int]] = {}
        for p, (low, high) in marks.items():
            first = max(low, (start or {}).get(p, low))
            if first < high:
                todo[p] = (first, high)
        if not todo:
            return
        total = sum(high - first for first, high in todo.values())
        if progress and total >= PROGRESS_MIN and sys.stderr.isatty():
            from tqdm import tqdm

            bar = tqdm(total=total, unit="rec", desc=what or f"read {topic}", file=sys.stderr)
        consumer.assign([TopicPartition(topic, p, first) for p, (first, _) in todo.items()])
        idle_deadline = time.monotonic() + timeout_s
        while todo:
            msgs = consumer.consume(num_messages=1000, timeout=0.5)
            if not msgs:
                if time.monotonic() > idle_deadline:
                    raise ServiceUnavailableError(
                        f"reading {topic!r} stalled: nothing for {timeout_s:g} s with partition(s) "
                        f"{sorted(todo)} short of the end offsets {[todo[p][1] for p in sorted(todo)]}")
                continue
            idle_deadline = time.monotonic() + timeout_s
            for m in msgs:
                p = m.partition()
                if p not in todo:
                    continue
                err = m.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        del todo[p]
                        continue
                    raise ServiceUnavailableError(f"reading {topic!r} failed: {err}")
                high = todo[p][1]
                if m.offset() < high:
                    if bar is not None:
                        bar.update(1)
                    yield raw_from_confluent(m)
                if m.offset() + 1 >= high:
                    del todo[p]
    finally:
        if bar is not None:
            bar.close()
        consumer.close()
