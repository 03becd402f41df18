"""The consume-and-commit loop: one confluent-kafka consumer, manual commits after the sink says
the records are durable. The offline sink (``streams/offline/worker.py``, into Iceberg tables) and
the online processor's default engine (``streams/online/engine.py``, into Redis) both run it; it
logs as the worker that runs it (``role``).

What this module decides (what "durable" means is the sink's, :class:`PartitionSink`):

- **Subscription by regex** ``^<prefix>\\.[A-Za-z0-9]``: librdkafka matches it against the
  cluster's topics at every metadata refresh (``topic.metadata.refresh.interval.ms``, a few
  seconds here), so a new feature group is consumed without a restart, and the internal
  topics (``<prefix>._registry``, ``._deadletter``) never match because group names cannot
  start with ``_``.
- **Resume where the sink says.** On assignment each partition starts at the offset
  ``PartitionSink.resume`` gives: the offline sink's Iceberg table records it in the same snapshot
  as the rows (``sinks/offline/table_commit.py``), so lost or reset consumer-group offsets, a
  recreated group or a crash between the table commit and the group commit change nothing. A sink
  that keeps no offsets (the online store; topics without an offline table) answers None: the
  partition starts at the consumer group's offset.
- **Flush, then commit the consumer group.** After ``sink.flush_many`` returns, every record added
  below the partition's position is durable in the sink (the offline sink: the rows and the next
  offset are one Iceberg snapshot; the online sink: Redis confirmed the write). Only then is the
  consumer group's offset committed. A partition that saw only skipped/poison messages is flushed
  too (an offsets-only snapshot, at most every ``idle_commit_s``).
- **Rebalance: discard, never flush, on revoke.** The new owner resumes from the sink's offsets (or
  the last commit, which never passes an unapplied record); a flush racing the revoke would be
  refused by the table anyway. Messages of partitions no longer assigned (fetched before the
  revoke) are dropped.
- **Failures rewind.** A refused commit (another writer committed that range: a zombie, a
  replay), a failed commit or a sink error (S3, the catalog, Redis or the registry down) discards
  the affected buffers and seeks those partitions back to where the sink (or the last commit)
  says, then backs off; memory stays bounded and the retry is the ordinary redelivery path. If
  even the seek fails the consumer resubscribes, which resumes from the sink again.
- **A table ahead of its topic** (the sink's resume offset is past the partition's end: the
  topic or the Kafka cluster was recreated) keeps the partition paused with an error saying so,
  instead of silently skipping the new topic's first records.
- **Fencing.** Plain consumer groups cannot fence a zombie that lost its partitions but keeps
  writing; the offline table does: its commit is refused (see ``table_commit.py``). The online
  store needs none: its writes are idempotent and ordered inside Redis.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

from confluent_kafka import (
    OFFSET_INVALID,
    TIMESTAMP_LOG_APPEND_TIME,
    Consumer,
    KafkaError,
    KafkaException,
    TopicPartition,
)

from schemas.backoff import Backoff
from schemas.errors import FeatureStoreError, ServiceUnavailableError
from streams.health import WorkerHealth
from streams.kafka_client import FAST_DRAIN, KafkaTarget, confluent_conf
from streams.route import RawMessage

TP = tuple[str, int]
_REGEX_SPECIAL = set("\\^$.|?*+()[]{}")


def chunk_bounds(chunk: Sequence[RawMessage]) -> tuple[dict[TP, int], dict[TP, int]]:
    """(first offset, position after the last) of each partition in ``chunk``, in consume order."""
    starts: dict[TP, int] = {}
    ends: dict[TP, int] = {}
    for raw in chunk:
        tp = (raw.topic, raw.partition)
        if tp not in ends:
            starts[tp] = raw.offset
        ends[tp] = raw.offset + 1
    return starts, ends


class ConsumeLoopError(FeatureStoreError):
    """The loop cannot go on safely (a rewind after a failure failed); restart it."""


class PartitionSink(Protocol):
    """What the loop drives (``streams.offline.applier.OfflineApplier``, ``streams.online.engine.OnlineSink``)."""

    def add(self, batch: list[RawMessage]) -> None:
        """Buffer the rows of ``batch``; dead-letter its poison messages before returning."""

    def resume(self, topic: str, partition: int) -> int | None:
        """Forget the partition's buffer; the offset its next batch must start at (OFFSET_BEGINNING
        if the table holds nothing of it), or None to start at the consumer group's offset."""

    def due(self) -> list[TP]:
        """Partitions whose buffers should be flushed now (rotation policy)."""

    def holds(self, topic: str, partition: int) -> bool:
        """True if rows of this partition are buffered (not yet durable)."""

    def flush(self, topic: str, partition: int) -> None:
        """Commit every buffered row of the partition, with its next offset, to its table; raise
        if it could not (OffsetsMismatchError if another writer committed that range)."""

    def flush_many(self, partitions: list[TP]) -> object:
        """:meth:`flush` of every partition of ``partitions`` at once (the offline sink: one table
        commit per table); returns once all of them are durable, raises if any is not."""

    def discard(self, topic: str, partition: int) -> None:
        """Forget the partition's buffered rows (they will be redelivered)."""


def subscription_pattern(prefix: str) -> str:
    """librdkafka regex matching every group topic of ``prefix`` and none of the internal ones."""
    escaped = "".join(f"\\{c}" if c in _REGEX_SPECIAL else c for c in prefix)
    return f"^{escaped}\\.[A-Za-z0-9]"


def consumer_config(bootstrap: KafkaTarget, group_id: str, *, metadata_refresh_ms: int = 2000,
                    session_timeout_ms: int = 6000, instance_id: str | None = None,
                    client_id: str | None = None, fetch_wait_ms: int | None = None,
                    fetch_min_bytes: int | None = None) -> dict[str, object]:
    """The consumer settings both pipelines share. ``fetch_wait_ms``/``fetch_min_bytes``: how long the
    broker may hold a fetch to gather that many bytes (librdkafka's defaults, 500 ms and 1 byte, when
    None): see ``streams.online.engine.FETCH_WAIT_MS`` for why the online engine sets them."""
    config: dict[str, object] = confluent_conf(bootstrap, {
        "group.id": group_id,
        "enable.auto.commit": False,        # commits only after files are durable
        "enable.auto.offset.store": False,  # we commit explicit offsets, never the stored position
        "auto.offset.reset": "earliest",    # a new group's first records must become rows too
        "enable.partition.eof": False,
        # How soon a regex subscription sees a new group's topic (default 5 minutes).
        "topic.metadata.refresh.interval.ms": metadata_refresh_ms,
        # A sink killed with -9 holds its partitions until the session times out.
        "session.timeout.ms": session_timeout_ms,
        "heartbeat.interval.ms": max(500, session_timeout_ms // 6),
        # A big flush (tens of MB to S3) happens between polls.
        "max.poll.interval.ms": 600_000,
        "fetch.max.bytes": 52_428_800,
        **FAST_DRAIN,  # a backlog (a restart, a rebuild, a burst) is read without pauses
        "log_level": 3,
    })
    if fetch_wait_ms is not None:
        config["fetch.wait.max.ms"] = fetch_wait_ms
    if fetch_min_bytes is not None:
        config["fetch.min.bytes"] = fetch_min_bytes
    if client_id:
        # Names the worker in the group's member list (streams/client_id.py; `featurestream status`).
        config["client.id"] = client_id
    if instance_id:
        # Static membership: a restarted sink with the same id gets its partitions back at once,
        # and a second process with the same id is fenced by the broker.
        config["group.instance.id"] = instance_id
    return config


def open_consumer(bootstrap: KafkaTarget, group_id: str, **options: Any) -> Consumer:
    """A confluent-kafka Consumer configured by :func:`consumer_config` (not yet subscribed)."""
    return Consumer(consumer_config(bootstrap, group_id, **options))


class ConsumeLoop:
    """Poll → sink.add → flush what is due → commit synchronously. One thread drives it (a sink may
    keep a thread of its own: its flush waits for it)."""

    def __init__(self, consumer: Any, sink: PartitionSink, pattern: str, *, role: str,
                 logger: logging.Logger | None = None, batch_size: int = 5000,
                 add_chunk: int = 1000, poll_timeout_s: float = 0.2, idle_commit_s: float = 1.0, backoff_max_s: float = 10.0,
                 on_revoked: Callable[[list[TP]], None] | None = None,
                 on_committed: Callable[[dict[TP, int]], None] | None = None, greedy: bool = False,
                 health: WorkerHealth | None = None) -> None:
        self.consumer = consumer
        self.sink = sink
        # Who runs the loop, in its log lines and errors ("offline sink", "online processor").
        self.role = role
        self._log = logger or logging.getLogger("featurestream")
        self.pattern = pattern
        self.batch_size = batch_size
        # Rotation is checked between chunks, so a file overshoots max_records by < add_chunk.
        self.add_chunk = max(1, add_chunk)
        self.poll_timeout_s = poll_timeout_s
        self.idle_commit_s = idle_commit_s
        self.backoff_max_s = backoff_max_s
        self._on_revoked = on_revoked
        self._on_committed = on_committed
        # greedy: return as soon as one message is there, with whatever else is already fetched
        # (the online engine's freshness), instead of waiting up to poll_timeout_s for a full batch.
        self.greedy = greedy
        # What /ready reports (streams/health.py); a throwaway one when nobody asks.
        self.health = health or WorkerHealth()
        self._lock = threading.Lock()      # guards _assigned (the compactor thread reads it)
        self._assigned: set[TP] = set()
        self._unresumed: set[TP] = set()    # assigned but paused: their table did not answer yet
        self._ahead: set[TP] = set()        # paused for good: the table is ahead of the topic
        self._position: dict[TP, int] = {}   # next offset after the last consumed message
        self._committed: dict[TP, int] = {}  # what we last committed (or learnt was committed)
        self._first: dict[TP, int] = {}      # first consumed offset, for the metric before any commit
        self._last_idle_commit = 0.0
        self._last_topic_check = float("-inf")
        # Consumed but not yet committed (buffered or being flushed), after the last step: an int
        # the metrics thread may read at any time (featurestream_offline_uncommitted_records).
        self.uncommitted_records = 0
        self._stop = threading.Event()
        self._backoff = Backoff(min(0.5, backoff_max_s), backoff_max_s)

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        self.consumer.subscribe([self.pattern], on_assign=self._on_assign, on_revoke=self._on_revoke,
                                on_lost=self._on_revoke)

    def stop(self) -> None:
        """Ask run() to finish (from a signal handler or another thread)."""
        self._stop.set()

    def assignment(self) -> set[TP]:
        with self._lock:
            return set(self._assigned)

    def committed(self) -> dict[TP, int]:
        """Offsets this process has committed (or rewound to), per partition it owns."""
        return dict(self._committed)

    def consumed(self) -> dict[TP, int]:
        """Next offset after the last consumed message, per partition (buffered or durable)."""
        return dict(self._position)

    def run(self, *, until: Callable[[], bool] | None = None) -> None:
        """Consume until stop() (or ``until()`` is true); then flush, commit and close."""
        self.start()
        try:
            while not self._stop.is_set() and not (until and until()):
                self.step()
            self.drain()
        finally:
            self.consumer.close()

    # -- rebalance callbacks (run inside consume(), on this thread) ---------------------------
    def _on_assign(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        pending = []
        storage_down = False
        for tp in partitions:
            if storage_down:
                # One table already failed to answer: the catalog or S3 is down for all of them, and
                # trying each in turn would hold the rebalance for minutes. Retried one per poll.
                pending.append(tp)
                continue
            try:
                start = self.sink.resume(tp.topic, tp.partition)
            except (FeatureStoreError, OSError) as exc:
                # The catalog or S3 is down: hold the partition paused until the table answers.
                self._log.warning("%s[%d]: cannot read where the table resumes (%s); paused until it answers",
                                  tp.topic, tp.partition, exc)
                pending.append(tp)
                storage_down = True
                continue
            if start is not None:
                if start >= 0 and self._ahead_of_topic(consumer, tp, start):
                    pending.append(tp)
                    self._ahead.add((tp.topic, tp.partition))
                tp.offset = start
                self._committed.pop((tp.topic, tp.partition), None)
        consumer.assign(partitions)  # with the offsets the tables record
        if pending:
            consumer.pause(pending)
        with self._lock:
            self._assigned |= {(tp.topic, tp.partition) for tp in partitions}
            self._unresumed |= {(tp.topic, tp.partition) for tp in pending} - self._ahead
            self.health.joined(len(self._assigned))
        self._log.info("%s: assigned %s", self.role,
                       ", ".join(f"{tp.topic}[{tp.partition}]@{tp.offset}" for tp in partitions) or "nothing")

    def _ahead_of_topic(self, consumer: Any, tp: TopicPartition, start: int) -> bool:
        """True if the table records an offset past the partition's end: the topic (or the whole
        Kafka cluster) was recreated under the table. Consuming from there would skip the new
        topic's records, so the partition stays paused until an operator decides (Iceberg's
        Kafka Connect sink stalls silently in this case; this says so)."""
        try:
            _, high = consumer.get_watermark_offsets(TopicPartition(tp.topic, tp.partition), timeout=10,
                                                     cached=False)
        except KafkaException:
            return False  # unknown: the offset check at commit time still guards the table
        if start <= high:
            return False
        self._log.error("%s[%d]: the table records offset %d but the partition ends at %d: the topic was "
                        "recreated under the table (a new Kafka cluster?). Not consuming it: replaying would "
                        "skip the new topic's first %d records. Move the table aside (or delete the group with "
                        "--purge) and replay, then restart the sink.", tp.topic, tp.partition, start, high,
                        start - high)
        return True

    def _resume_pending(self) -> None:
        """Partitions whose table did not answer at assignment: try again, then let them go."""
        for t, p in sorted(self._unresumed):
            if (t, p) not in self._assigned:
                self._unresumed.discard((t, p))
                continue
            try:
                start = self.sink.resume(t, p)
            except (FeatureStoreError, OSError):
                return
            self._unresumed.discard((t, p))
            if start is not None:
                self.consumer.seek(TopicPartition(t, p, start))
            self.consumer.resume([TopicPartition(t, p)])

    def _on_revoke(self, _consumer: Any, partitions: list[TopicPartition]) -> None:
        revoked = [(tp.topic, tp.partition) for tp in partitions]
        for tp in revoked:
            self._ahead.discard(tp)
            self.sink.discard(*tp)  # not flushed: see the module docstring
            self._position.pop(tp, None)
            self._committed.pop(tp, None)
            self._first.pop(tp, None)
        with self._lock:
            self._assigned -= set(revoked)
            if not self._assigned:
                self.health.left()  # eager rebalance: the next on_assign says what we hold
            else:
                self.health.joined(len(self._assigned))
        if self._on_revoked is not None and revoked:
            self._on_revoked(revoked)
        self._log.info("%s: revoked %s", self.role, ", ".join(f"{t}[{p}]" for t, p in revoked) or "nothing")

    # -- the loop ----------------------------------------------------------------------------
    def step(self) -> None:
        """One poll + add + flush/commit round; failures rewind instead of escaping."""
        if self._unresumed:
            self._resume_pending()
        if self.greedy:
            first = self.consumer.poll(self.poll_timeout_s)
            msgs = [] if first is None else [first, *self.consumer.consume(num_messages=self.batch_size - 1,
                                                                               timeout=0)]
        else:
            msgs = self.consumer.consume(num_messages=self.batch_size, timeout=self.poll_timeout_s)
        self.health.beat()
        if not self.health.is_joined:
            self._check_nothing_to_consume()
        batch: list[RawMessage] = []
        assigned, position, new_tuple = self._assigned, self._position, tuple.__new__
        starts: dict[TP, int] = {}  # each partition's first offset in the batch
        ends: dict[TP, int] = {}    # and its position after the whole batch
        for m in msgs:
            err = m.error()
            if err is not None:
                if err.code() in (KafkaError._PARTITION_EOF, KafkaError.UNKNOWN_TOPIC_OR_PART):
                    continue  # a group topic deleted while subscribed by regex
                if err.fatal():
                    raise ConsumeLoopError(f"{self.role}: the Kafka consumer failed: {err}")
                self._log.warning("consumer error: %s", err)
                continue
            topic, partition, offset = m.topic(), m.partition(), m.offset()
            tp = (topic, partition)
            if tp not in assigned:
                continue  # fetched before a revoke: the new owner reads it again
            if offset < position.get(tp, -1):
                continue  # already consumed (a rewind races with prefetched data)
            # raw_from_confluent, inline: this loop runs once per message. tuple.__new__ with the
            # fields in order is what RawMessage(...) does (NamedTuple._make too), without the
            # generated __new__'s Python frame: 0.10 against 0.26 µs a message.
            kind, ts = m.timestamp()
            batch.append(new_tuple(RawMessage, (topic, partition, offset, m.key(), m.value(), m.headers(), ts,
                                                kind == TIMESTAMP_LOG_APPEND_TIME)))
            if tp not in ends:
                starts[tp] = offset
            ends[tp] = offset + 1
        try:
            for start in range(0, len(batch), self.add_chunk):
                chunk = batch[start:start + self.add_chunk]
                self.sink.add(chunk)
                # A batch added whole (the usual case) moves each partition once; chunks move
                # message by message, so a failed later chunk leaves the earlier ones counted.
                self._advance(*((starts, ends) if len(chunk) == len(batch) else chunk_bounds(chunk)))
                self._flush_and_commit(self._due())
            if not batch:
                self._flush_and_commit(self._due())
            self._backoff.succeeded()
            self.health.recovered()
        except (FeatureStoreError, KafkaException, OSError) as exc:
            self._recover_from(exc, {(r.topic, r.partition) for r in batch} | set(self._position))
        self.uncommitted_records = sum(pos - self._committed.get(tp, self._first.get(tp, pos))
                                       for tp, pos in self._position.items())

    def _advance(self, starts: dict[TP, int], ends: dict[TP, int]) -> None:
        """Move each partition's position past the messages just added (``ends``); remember the
        first offset consumed of each (``starts``)."""
        self._position.update(ends)
        for tp, first in starts.items():
            self._first.setdefault(tp, first)

    def _check_nothing_to_consume(self, every_s: float = 5.0) -> None:
        """librdkafka joins the group only once the pattern matches a topic: with no feature group
        yet (a fresh install) the sink would never count as joined, and never be ready."""
        now = time.monotonic()
        if now - self._last_topic_check < every_s:
            return
        self._last_topic_check = now
        try:
            topics = self.consumer.list_topics(timeout=5).topics
        except KafkaException:
            return  # the broker is away: not ready is the right answer
        pattern = re.compile(self.pattern)
        if not any(pattern.match(t) for t in topics):
            self.health.joined(0)

    def _due(self) -> list[TP]:
        due = {tp for tp in self.sink.due() if tp in self._assigned}
        now = time.monotonic()
        if now - self._last_idle_commit >= self.idle_commit_s:
            self._last_idle_commit = now
            due |= {tp for tp, pos in self._position.items()
                    if pos != self._committed.get(tp) and not self.sink.holds(*tp)}
        return sorted(due)

    def _flush_and_commit(self, partitions: list[TP]) -> None:
        if not partitions:
            return
        self.sink.flush_many(list(partitions))  # e.g. one table commit per table, when it returns
        offsets = []
        for tp in partitions:
            pos = self._position.get(tp)
            if pos is not None and pos != self._committed.get(tp):
                offsets.append(TopicPartition(tp[0], tp[1], pos))
        if not offsets:
            return
        # Synchronous: the next batch of these partitions must start at exactly these offsets.
        answered = self.consumer.commit(offsets=offsets, asynchronous=False) or offsets
        failed = [(tp.topic, tp.partition) for tp in answered if tp.error is not None]
        done = {(tp.topic, tp.partition): tp.offset for tp in answered if tp.error is None}
        self._committed.update(done)
        if self._on_committed is not None and done:
            self._on_committed(done)
        if failed:
            errors = "; ".join(f"{tp.topic}[{tp.partition}]: {tp.error}" for tp in answered if tp.error)
            raise ServiceUnavailableError(f"{self.role}: committing offsets failed ({errors})")

    def _recover_from(self, exc: BaseException, partitions: set[TP]) -> None:
        delay = self._backoff.failed()
        # A fixed phrase: /ready is unauthenticated and exception text names hosts.
        self.health.failing("writing or committing records failed; retrying")
        self._log.error("%s: %s; rewinding %d partition(s) to their committed offsets, retrying in "
                        "%.1f s", self.role, exc, len(partitions), delay)
        self.rewind(partitions)
        self._stop.wait(delay)

    def rewind(self, partitions: Iterable[TP]) -> None:
        """Discard buffers and seek back to where the tables say (redelivery restarts batches there)."""
        targets = sorted(tp for tp in set(partitions) if tp in self._assigned)
        for tp in set(partitions):
            self.sink.discard(*tp)
            self._position.pop(tp, None)
            self._committed.pop(tp, None)
            self._first.pop(tp, None)
        if not targets:
            return
        try:
            from_group = []
            for t, p in targets:
                start = self.sink.resume(t, p)
                if start is None:
                    from_group.append((t, p))
                else:
                    self.consumer.seek(TopicPartition(t, p, start))
            found = self.consumer.committed([TopicPartition(t, p) for t, p in from_group], timeout=10) \
                if from_group else []
            for tp in found:
                offset = tp.offset
                if offset == OFFSET_INVALID or offset < 0:
                    offset, _ = self.consumer.get_watermark_offsets(TopicPartition(tp.topic, tp.partition),
                                                                    timeout=10, cached=False)
                self.consumer.seek(TopicPartition(tp.topic, tp.partition, offset))
                self._committed[(tp.topic, tp.partition)] = offset
        except (KafkaException, FeatureStoreError, OSError) as exc:
            # Typically a rebalance in progress, or the catalog down. Leaving and rejoining the
            # group hands every partition back, resumed from the tables.
            self._log.warning("seeking back failed (%s); resubscribing to restart from the tables' offsets", exc)
            self._resubscribe(exc)

    def _resubscribe(self, cause: BaseException) -> None:
        with self._lock:
            everything = set(self._assigned) | set(self._position)
            self._assigned.clear()  # nothing is consumed until the new assignment arrives
            self.health.left()
            self._unresumed.clear()
            self._ahead.clear()
        for tp in everything:
            self.sink.discard(*tp)
        self._position.clear()
        self._committed.clear()
        self._first.clear()
        try:
            self.consumer.unsubscribe()
            self.start()
        except KafkaException as exc:
            raise ConsumeLoopError(f"{self.role}: could not rewind to the committed offsets after a failure "
                                    f"({cause}), nor resubscribe ({exc}); restart the worker (it resumes from "
                                    "the committed offsets)") from exc

    def drain(self) -> None:
        """Shutdown: flush and commit every partition still holding rows or uncommitted skips."""
        pending = [tp for tp in self._assigned
                   if self.sink.holds(*tp) or self._position.get(tp, self._committed.get(tp))
                   != self._committed.get(tp)]
        try:
            self._flush_and_commit(sorted(pending))
        except (FeatureStoreError, KafkaException, OSError) as exc:
            self._log.error("%s: final flush/commit failed (%s); the records are read again at restart",
                            self.role, exc)
