"""The producer side: durable, ordered publication of encoded records to group topics.

confluent-kafka with idempotence and ``acks=all`` (an acknowledged put is durable), the
murmur2 partitioner (the Java client's, so every producer in every language puts one
identifier in the same partition), lz4 batches for throughput. A background thread serves
delivery callbacks so both the blocking and the future-returning paths work.

Broker outages: a record waits in the producer for up to the **delivery timeout** (librdkafka's
``message.timeout.ms``, Kafka's ``delivery.timeout.ms``) while librdkafka reconnects; the
idempotent producer lets the broker drop the copies its retries send again, so a restart of the
broker within that time loses and duplicates nothing. After it, every record that was not
acknowledged is reported as such (``PublishBatch.unacknowledged``). A broker that never answered
this process is reported within a few seconds instead (streams.contact).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from functools import partial

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from schemas.errors import FeatureStoreError, ServiceUnavailableError
from schemas.names import MAX_MESSAGE_BYTES
from streams.admin import admin_client, topic_exists
from streams.contact import DEFAULT_DELIVERY_TIMEOUT_S, mark_answered, wait_budget
from streams.kafka_client import KafkaTarget, confluent_conf

Headers = Sequence[tuple[str, bytes]]

# librdkafka reports a timed-out message on its next timeout scan (about once a second) after
# message.timeout.ms; a wait for delivery reports allows this much beyond the delivery timeout.
REPORT_GRACE_S = 10.0

# Records that share one delivery callback on the quiet bulk producer (Publisher.bulk): a failure
# names its group, not its record, so at most this many rows are listed for one failed record.
FAILURE_GROUP = 32

# produce()'s arguments are passed by position: confluent-kafka parses keywords much more slowly (its
# PyArg_ParseTupleAndKeywords looks each name up), and ingest calls it once a record. Measured in one
# process, no broker, 1 KB values, 3 headers, medians of 60 × 5,000 calls: 0.88-0.92 µs a call by
# position against 1.36-1.42 by keyword. The order is the C signature's: topic, value, key, partition,
# callback, on_delivery (callback's alias), timestamp, headers; tests/unit/test_produce_record.py holds
# the installed confluent-kafka to it.
ANY_PARTITION = -1  # RD_KAFKA_PARTITION_UA: the configured partitioner (murmur2) picks it
NO_TIMESTAMP = 0  # librdkafka stamps the record when it is queued


def produce_record(producer: Producer, topic: str, key: bytes, value: bytes, headers: Headers | None,
                   on_delivery: object) -> None:
    """``producer.produce(topic, value=value, key=key, headers=headers, on_delivery=on_delivery)``, by
    position (see ANY_PARTITION). Raises what produce raises (BufferError when its queue is full)."""
    producer.produce(topic, value, key, ANY_PARTITION, on_delivery, None, NO_TIMESTAMP, headers)


class PublishError(FeatureStoreError):
    """The broker did not acknowledge a record (after the producer's own retries)."""


class TopicMissingError(FeatureStoreError):
    """The group's topic does not exist on the broker (deleted behind the registry's back?)."""


def producer_config(bootstrap: KafkaTarget, *, timeout_s: float, linger_ms: int = 5) -> dict[str, object]:
    return confluent_conf(bootstrap, {
        "enable.idempotence": True,  # implies acks=all, retries, in-flight <= 5 with ordering kept
        "acks": "all",
        "partitioner": "murmur2_random",
        "compression.type": "lz4",
        "linger.ms": linger_ms,
        "batch.size": 1_000_000,
        # The largest message the door lets through (schemas.wire.check_message_size): explicit, so
        # the door's limit and the producer's cannot drift apart.
        "message.max.bytes": MAX_MESSAGE_BYTES,
        "queue.buffering.max.messages": 500_000,
        "queue.buffering.max.kbytes": 1_048_576,
        # The delivery timeout: a record the broker has not acknowledged this long after it was
        # queued fails with _MSG_TIMED_OUT. Until then librdkafka keeps reconnecting and retrying,
        # which rides out a broker restart.
        "message.timeout.ms": int(timeout_s * 1000),
        "socket.timeout.ms": int(min(timeout_s, 60) * 1000),
        # librdkafka backs off reconnects up to 10 s by default; a broker that is back should be
        # found within a second, not ten.
        "reconnect.backoff.max.ms": 1000,
        "log_level": 0,
    })


class Publisher:
    """Publishes pre-encoded records. Thread-safe.

    ``timeout_s`` is the delivery timeout (featurestream.config passes it down).
    """

    def __init__(self, bootstrap: KafkaTarget, *, timeout_s: float = DEFAULT_DELIVERY_TIMEOUT_S,
                 linger_ms: int = 5) -> None:
        self.bootstrap = bootstrap
        self.timeout_s = timeout_s
        # Two producers: bulk ingest (publish_many) batches with linger.ms, while single records
        # (publish, publish_sync) go out at once — linger.ms=5 alone made every put_record take
        # ~6 ms at p50 instead of ~0.5 ms. Per-key order holds within each path; a process that
        # writes one key through both at the same time should not rely on their relative order.
        self._producer = Producer(producer_config(bootstrap, timeout_s=timeout_s, linger_ms=linger_ms))
        self._direct = Producer(producer_config(bootstrap, timeout_s=timeout_s, linger_ms=0))
        self._admin = admin_client(bootstrap, timeout_s=min(timeout_s, 10.0))
        self._known_topics: set[str] = set()
        self._closed = threading.Event()
        self._linger_ms = linger_ms
        # The quiet bulk producer (see bulk), made at its first use; one caller at a time.
        self._quiet: Producer | None = None
        self._quiet_lock = threading.Lock()
        self._pollers: list[threading.Thread] = []
        for producer in (self._direct, self._producer):
            self._start_poller(producer)

    def _start_poller(self, producer: Producer) -> None:
        # One delivery thread per producer: poll() blocks, and a delivery report waiting behind
        # the other producer's poll would add its timeout to every put's latency.
        poller = threading.Thread(target=self._poll_loop, args=(producer,),
                                  name=f"featurestream-delivery-{len(self._pollers)}", daemon=True)
        self._pollers.append(poller)
        poller.start()

    def _poll_loop(self, producer: Producer) -> None:
        while not self._closed.is_set():
            producer.poll(0.05)

    def check_topic(self, topic: str) -> None:
        """Fail when the topic is missing, or when the broker does not answer: within seconds if it
        never answered this process, else after the delivery timeout (streams.contact)."""
        if topic in self._known_topics:
            return
        if not topic_exists(self._admin, topic, timeout_s=wait_budget(self.bootstrap, self.timeout_s),
                            bootstrap=self.bootstrap):
            raise TopicMissingError(f"Kafka topic {topic!r} does not exist on {self.bootstrap}; "
                                    "create the feature group first (`featurestream group create`)")
        self._known_topics.add(topic)

    def publish(self, topic: str, key: bytes, value: bytes, headers: Headers | None = None) -> Future:
        """Queue one record; the future resolves to (partition, offset) once the broker acknowledged."""
        self.check_topic(topic)
        future, on_delivery = self._delivery_future(topic, key)

        self._produce(topic, key, value, headers, on_delivery)
        return future

    def try_publish(self, topic: str, key: bytes, value: bytes, headers: Headers | None = None) -> Future | None:
        """``publish`` if it can be done without waiting, else None (and nothing was queued).

        For callers on an event loop: waiting happens when the topic was not checked yet (a
        broker round trip) or when the producer's queue is full (a broker away); they hand
        those calls to a thread instead.
        """
        future: Future = Future()

        def settle(error: Exception | None, coordinates: tuple[int, int] | None) -> None:
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(coordinates)

        return future if self.try_produce(topic, key, value, headers, settle) else None

    def try_produce(self, topic: str, key: bytes, value: bytes, headers: Headers | None,
                    on_delivery: Callable[[Exception | None, tuple[int, int] | None], None]) -> bool:
        """Queue one record without waiting, as ``try_publish``, but report its delivery to
        ``on_delivery(error, None)`` or ``on_delivery(None, (partition, offset))`` on the delivery
        thread, not through a Future: a caller that gathers many reports before waking its event
        loop pays one wake-up per batch. False if it would wait (nothing was queued)."""
        if topic not in self._known_topics:
            return False
        bootstrap, timeout_s = self.bootstrap, self.timeout_s

        def delivered(err: KafkaError | None, msg: Message) -> None:
            if err is not None:
                on_delivery(_delivery_error(topic, err, bootstrap, timeout_s, key), None)
            else:
                on_delivery(None, (msg.partition(), msg.offset()))

        try:
            produce_record(self._direct, topic, key, value, headers, delivered)
        except BufferError:
            return False
        except KafkaException as exc:
            raise PublishError(f"could not publish to {topic!r}: {exc}") from exc
        return True

    def _delivery_future(self, topic: str, key: bytes) -> tuple[Future, Callable[[KafkaError | None, Message], None]]:
        """A future for one record and the delivery callback that resolves it."""
        future: Future = Future()
        bootstrap, timeout_s = self.bootstrap, self.timeout_s

        def on_delivery(err: KafkaError | None, msg: Message) -> None:
            if err is not None:
                future.set_exception(_delivery_error(topic, err, bootstrap, timeout_s, key))
            else:
                future.set_result((msg.partition(), msg.offset()))

        return future, on_delivery

    def publish_sync(self, topic: str, key: bytes, value: bytes, headers: Headers | None = None,
                     *, timeout_s: float | None = None) -> tuple[int, int]:
        future = self.publish(topic, key, value, headers)
        wait = (timeout_s or self.timeout_s) + REPORT_GRACE_S
        try:
            return future.result(timeout=wait)
        except TimeoutError as exc:
            raise ServiceUnavailableError(f"Kafka at {self.bootstrap} did not acknowledge a record on "
                                          f"{topic!r} (key {key[:80]!r}) within {wait:g} s; it was not "
                                          "delivered") from exc

    def publish_many(self, topic: str, records: Iterable[tuple[bytes, bytes, Headers | None]], *,
                     abort: threading.Event | None = None) -> PublishBatch:
        """Queue many records without a round trip each; ``PublishBatch.settle()`` collects the outcome.

        Records are numbered from 0 in the order given; the batch reports the numbers the broker did
        not acknowledge. ``abort`` (shared by the batches of one ingest) is set by the first record
        that fails because Kafka is unavailable; once set, no further record is queued (the rest are
        reported as never sent) rather than each waiting out its own delivery timeout.
        """
        return BulkPublisher(self, self._producer, group=1).publish(topic, records, abort=abort)

    @contextmanager
    def bulk(self) -> Iterator[BulkPublisher]:
        """A ``BulkPublisher`` for one caller's many batches, settled before the block ends.

        Inside, the caller has the quiet producer to itself when no other thread has it: its
        successful deliveries are not reported to Python (librdkafka's delivery.report.only.error),
        which saves ~1.5 CPU-µs a record of a file ingest's parent, and a batch is complete once the
        producer has nothing left in flight. A failure then names a group of FAILURE_GROUP records,
        not its record. A second thread meanwhile gets the reporting producer (publish_many's), where
        every record is reported, so that neither waits for the other's records to drain.
        """
        if not self._quiet_lock.acquire(blocking=False):
            yield BulkPublisher(self, self._producer, group=1)
            return
        try:
            if self._quiet is None:
                config = producer_config(self.bootstrap, timeout_s=self.timeout_s, linger_ms=self._linger_ms)
                self._quiet = Producer({**config, "delivery.report.only.error": True})
                self._start_poller(self._quiet)
            yield BulkPublisher(self, self._quiet, group=FAILURE_GROUP)
        finally:
            self._quiet_lock.release()

    def flush(self, timeout_s: float | None = None) -> int:
        timeout = self.timeout_s if timeout_s is None else timeout_s
        left = self._direct.flush(timeout) + self._producer.flush(timeout)
        return left + (self._quiet.flush(timeout) if self._quiet is not None else 0)

    def _produce(self, topic: str, key: bytes, value: bytes, headers: Headers | None, cb: object) -> None:
        deadline = time.monotonic() + self.timeout_s
        while True:
            try:
                produce_record(self._direct, topic, key, value, headers, cb)
                return
            except BufferError as exc:
                if time.monotonic() > deadline:
                    raise ServiceUnavailableError(f"the producer queue for {self.bootstrap} stayed full for "
                                                  f"{self.timeout_s:g} s; is the broker reachable? The record "
                                                  f"for {topic!r} (key {key[:80]!r}) was not sent") from exc
                self._direct.poll(0.05)
            except KafkaException as exc:
                raise PublishError(f"could not publish to {topic!r}: {exc}") from exc

    def close(self, timeout_s: float | None = None) -> None:
        self.flush(timeout_s)
        self._closed.set()
        for poller in self._pollers:
            poller.join(timeout=2.0)


def _never() -> bool:
    return False


class BulkPublisher:
    """The hot loop of ingest on one producer: one C call per record, and one delivery callback for
    each ``group`` records (1: every record reported, success or failure; more: only failures are
    reported, on the quiet producer of ``Publisher.bulk``)."""

    def __init__(self, publisher: Publisher, producer: Producer, *, group: int) -> None:
        self._publisher = publisher
        self._producer = producer
        self._group = group
        self._queued_until = 0.0  # when this caller queued its last record

    def publish(self, topic: str, records: Iterable[tuple[bytes, bytes, Headers | None]], *,
                abort: threading.Event | None = None) -> PublishBatch:
        """``Publisher.publish_many`` on this producer."""
        publisher, group = self._publisher, self._group
        publisher.check_topic(topic)
        batch = PublishBatch(publisher.bootstrap, topic, publisher.timeout_s, abort, group=group)
        on_delivery = batch._on_delivery
        produce = self._producer.produce
        stop = abort.is_set if abort is not None else _never
        any_partition, no_timestamp = ANY_PARTITION, NO_TIMESTAMP
        sent = 0
        cb = None
        try:
            # The number of the group's first record is bound into its callback, so a failed delivery
            # names exactly which record (group 1) or which FAILURE_GROUP records it was.
            for key, value, headers in records:
                if stop():
                    break
                if sent % group == 0:
                    cb = partial(on_delivery, sent)
                try:
                    produce(topic, value, key, any_partition, cb, None, no_timestamp, headers)  # produce_record, inlined
                except BufferError:
                    if not self._produce_when_room(topic, key, value, headers, cb, stop):
                        break
                sent += 1
        finally:
            batch.sent += sent
            batch.queued_at = self._queued_until = time.monotonic()
        return batch

    def settle(self, batch: PublishBatch) -> None:
        """``batch.settle`` against this producer. A quiet batch is complete only when the producer
        is empty, so it waits for every batch queued here: up to the delivery timeout after the last."""
        batch.settle(self._producer.flush, queued_until=self._queued_until)

    def _produce_when_room(self, topic: str, key: bytes, value: bytes, headers: Headers | None, cb: object,
                           stop: Callable[[], bool]) -> bool:
        """The bulk producer's queue is full: let librdkafka drain it (or time records out), then queue
        the record. False if ``stop`` came first: the record was not queued."""
        while not stop():
            self._producer.poll(0.05)
            try:
                produce_record(self._producer, topic, key, value, headers, cb)
                return True
            except BufferError:
                continue
        return False


class PublishBatch:
    """Delivery accounting for ``publish_many``: which of its records the broker acknowledged.

    Records are numbered 0..``sent``-1 in the order they were queued; numbers from ``sent`` on
    (when the batch stopped early) were never queued. With ``group`` > 1 (Publisher.bulk's quiet
    producer) only failures are reported, each for the group of records it is one of: the batch is
    complete once the producer has nothing in flight, and a group with a failure is listed whole.
    """

    def __init__(self, bootstrap: KafkaTarget, topic: str, timeout_s: float = DEFAULT_DELIVERY_TIMEOUT_S,
                 abort: threading.Event | None = None, *, group: int = 1) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.timeout_s = timeout_s
        self.group = group
        self.sent = 0
        self.acked = 0
        self.queued_at = time.monotonic()
        # number (of the group's first record) -> why it failed, and how many of the group did;
        # filled from the delivery thread
        self.failures: dict[int, str] = {}
        self.failed_in: dict[int, int] = {}
        self.first_error: PublishError | ServiceUnavailableError | None = None
        self._complete = False
        self._abort = abort
        self._lock = threading.Lock()

    @property
    def failed(self) -> int:
        """Records the broker reported as failed."""
        return sum(self.failed_in.values())

    def _on_delivery(self, number: int, err: KafkaError | None, _msg: Message) -> None:
        if err is None:
            with self._lock:
                self.acked += 1
            return
        error = _delivery_error(self.topic, err, self.bootstrap, self.timeout_s)
        with self._lock:
            self.failures.setdefault(number, err.str())
            self.failed_in[number] = self.failed_in.get(number, 0) + 1
            if self.first_error is None:
                self.first_error = error
        if isinstance(error, ServiceUnavailableError) and self._abort is not None:
            self._abort.set()

    def settle(self, flush: Callable[[float], int], *, queued_until: float = 0.0) -> None:
        """Block until every queued record is acknowledged or failed (librdkafka reports each within
        the delivery timeout of its queueing); a record still unreported after that is counted as
        not acknowledged. ``flush(seconds)`` is the producer's: it serves delivery reports and returns
        how many records it still holds; ``queued_until``: when the last record of any batch this
        one waits for was queued. Never raises: read ``failures`` / ``unacknowledged``."""
        deadline = max(self.queued_at, queued_until) + self.timeout_s + REPORT_GRACE_S
        while not self._settled(flush):
            if time.monotonic() > deadline:
                break
        if self.group > 1 and self._complete:
            # Nothing in flight and every failure reported: the rest were acknowledged.
            self.acked = self.sent - sum(self._group_size(n) for n in self.failed_in)
        if self.acked:
            mark_answered(self.bootstrap)

    def _settled(self, flush: Callable[[float], int]) -> bool:
        if self.group == 1:
            if self.acked + self.failed < self.sent:
                flush(0.1)
            self._complete = self.acked + self.failed >= self.sent
        else:
            # librdkafka counts a record in flight until its delivery callback has returned, so an empty
            # producer means every failure of this batch has been recorded.
            self._complete = flush(0.1) == 0
        return self._complete

    def _group_size(self, first: int) -> int:
        return min(self.group, self.sent - first)

    def unacknowledged(self, total: int) -> dict[int, str]:
        """Record number -> reason, for every record of the ``total`` handed to publish_many that the
        broker did not acknowledge: failed, never reported, or never queued."""
        with self._lock:
            failures = dict(self.failures)
            failed_in = dict(self.failed_in)
            complete = self._complete if self.group > 1 else self.acked + sum(failed_in.values()) >= self.sent
        out: dict[int, str] = {}
        for first, why in failures.items():
            size = self._group_size(first)
            if failed_in[first] < size:
                why = (f"{why} ({failed_in[first]} of the {size} records numbered {first}-{first + size - 1} of this "
                       "batch failed, which ones is not reported, so each is listed: a resumed ingest skips the "
                       "ones the broker kept)")
            for n in range(first, first + size):
                out[n] = f"not acknowledged by Kafka: {why}"
        if not complete:
            # librdkafka promises a report per record within the delivery timeout; should it break
            # that promise, which of the unreported records arrived is unknown, so every record
            # without a failure is listed as unknown (a resumed ingest checks the topic for them).
            for n in range(self.sent):
                out.setdefault(n, "acknowledgement unknown: no delivery report from Kafka within the "
                                  "delivery timeout")
        cause = self.first_error or f"Kafka at {self.bootstrap} unavailable"
        for n in range(self.sent, total):
            out[n] = f"not sent: publishing stopped after an earlier record failed ({cause})"
        return out

    def wait(self, publisher: Publisher) -> None:
        """Block until every record is acknowledged or failed; raise the first failure."""
        self.settle(publisher.flush)
        if self.acked + self.failed < self.sent:
            raise ServiceUnavailableError(
                f"{self.sent - self.acked - self.failed} of {self.sent} records to {self.topic!r} were "
                f"not acknowledged by Kafka at {self.bootstrap} in time")
        if self.first_error is not None:
            raise self.first_error


def _delivery_error(topic: str, err: KafkaError, bootstrap: KafkaTarget, timeout_s: float,
                    key: bytes | None = None) -> PublishError | ServiceUnavailableError:
    record = "a record" if key is None else f"the record with key {key[:80]!r}"
    if err.code() in (KafkaError._MSG_TIMED_OUT, KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN,
                      KafkaError._TIMED_OUT) or err.fatal():
        return ServiceUnavailableError(f"Kafka at {bootstrap} did not acknowledge {record} on {topic!r} within "
                                       f"the delivery timeout ({timeout_s:g} s): {err.str()}; it was not "
                                       "delivered")
    return PublishError(f"Kafka rejected {record} on {topic!r}: {err.str()}")
