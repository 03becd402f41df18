"""produce_record passes produce()'s arguments by position (streams.publisher.ANY_PARTITION says why):
the installed confluent-kafka must read each where we put it. No broker: the records stay queued, and
purging them reports each, with its key and value, to its own delivery callback. (A purged record's report
carries no headers; tests/integration/test_publish.py reads them back from the topic.) A header list in
another slot than ``headers`` would not even be taken: the other slots are typed (int, callable)."""

from __future__ import annotations

import time

from confluent_kafka import KafkaError, Producer

from streams.publisher import produce_record


def _unreachable_producer() -> Producer:
    # Port 1 on loopback: nothing listens, so nothing is sent and every record stays queued.
    return Producer({"bootstrap.servers": "127.0.0.1:1", "log_level": 0, "socket.connection.setup.timeout.ms": 1000})


def test_produce_record_gives_key_value_and_callback_their_places() -> None:
    producer = _unreachable_producer()
    reports: list[tuple[str, int, bytes, bytes, int | None]] = []

    def report(tag: str) -> object:
        def on_delivery(err: KafkaError, msg: object) -> None:
            reports.append((tag, err.code(), msg.key(), msg.value(), msg.partition()))
        return on_delivery

    produce_record(producer, "a-topic", b"the-key", b'{"v":1}', [("h1", b"one"), ("h2", b"two")], report("first"))
    produce_record(producer, "a-topic", b"other-key", b"", None, report("second"))
    produce_record(producer, "a-topic", b"no-report", b"x", None, None)
    producer.purge()  # each purged record's report is queued before purge returns
    deadline = time.monotonic() + 10
    while len(reports) < 2 and time.monotonic() < deadline:
        producer.poll(0.1)
    # No partition yet: ANY_PARTITION left it to the partitioner, which had no metadata to run on.
    assert sorted(reports) == [
        ("first", KafkaError._PURGE_QUEUE, b"the-key", b'{"v":1}', None),
        ("second", KafkaError._PURGE_QUEUE, b"other-key", b"", None),
    ]

