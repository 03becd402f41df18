"""The online processor's confluent-kafka engine: the consume-and-commit loop shared with the
offline sink (``streams/consume_loop.py``) driving the online apply step, with no faust in between.

Why a second engine: faust hands every event through asyncio machinery (tasks, events, acks)
that costs tens of CPU-µs per record before the apply step starts, on a machine where the
processor competes with Kafka, Redis and the load for two cores. Here a batch is one C call
(``consume``), then one columnar decode and its script arguments (``applier.py`` ``prepare``), then
write-if-newer in Redis on a thread of its own while the next batch is decoded (:class:`OnlineSink`),
then offsets are committed once a second, always after Redis confirmed everything below them.

Semantics match the faust engine: consumer group ``<prefix>-online``; a regex subscription picks
up new groups within seconds; at-least-once with an idempotent store (a redelivered record is a
DUPLICATE or STALE no-op); a failing Redis rewinds the batch's partitions to their committed
offsets and retries with backoff; poison goes to the dead-letter topic. The two engines use
different partition assignors, so every processor of one deployment must run the same engine.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from streams.client_id import worker_client_id
from streams.consume_loop import TP, ConsumeLoop, open_consumer, subscription_pattern
from streams.gc_tuning import settle_heap
from streams.health import WorkerHealth
from streams.kafka_client import KafkaTarget
from streams.online.applier import ApplySummary, OnlineApplier, PreparedBatch, record_metrics
from streams.route import RawMessage

log = logging.getLogger("featurestream.online")

# How the live path fetches: the broker holds a fetch until FETCH_MIN_BYTES have arrived or
# FETCH_WAIT_MS have passed. librdkafka's defaults (1 byte, 500 ms) answer each fetch as soon as one
# record is there: at 5,000 records/s that was ~500 fetches and batches of ~9 records a second, and
# the per-fetch and per-batch work took 0.5 of a core in the processor and 0.6 in the broker, on a
# machine of 2 cores that the load and Redis share. With 10 ms / 64 KiB (bench/online.py (b),
# 2026-12-03): batches of ~50, processor 0.29-0.38 cores, broker 0.37-0.46, freshness p99 at
# 5,000/s under 100 ms in 3 runs of 5 (the misses are stalls this does not cause; README, Benchmarks).
# The price: at most 10 ms more for a lone record, and an idle processor fetches 100 times a second
# (0.11 of a core for the broker and processor together, against 0.03).
# ``featurestream process --fetch-wait-ms 0`` restores librdkafka's defaults.
FETCH_WAIT_MS = 10
FETCH_MIN_BYTES = 65_536


def online_group_id(prefix: str) -> str:
    return f"{prefix}-online"


class OnlineSink:
    """The online store as a ``PartitionSink``, with one batch in flight.

    ``add`` decodes and judges a batch and builds its script calls (``OnlineApplier.prepare``, CPU on
    the loop's thread) while the previous batch's Redis round trip runs on a thread of its own
    (``execute``: the writes, the aggregation fold, the dead letters); then it waits for that previous
    batch and hands this one over. So decoding batch n+1 overlaps Redis running batch n, and at most
    one batch is unconfirmed.

    Commits: the loop commits a partition's position only after ``flush_many``, which waits for the
    batch in flight, so a committed offset never passes a record Redis has not confirmed. A failed
    batch raises at the next ``add`` or ``flush_many``: the loop rewinds every uncommitted partition to
    its committed offset (the batch in flight included) and retries. ``kill -9`` loses at most the
    batch in flight and the batches since the last commit, which Kafka redelivers; write-if-newer
    makes the redelivery a no-op where it had landed. On a revoke (``discard``) the batch in flight is
    waited for before the partitions go, so none of our writes of it lands after the new owner starts;
    its failure, if any, is kept for the next call (it may hold partitions we keep)."""

    def __init__(self, applier: OnlineApplier) -> None:
        self.applier = applier
        self._redis = ThreadPoolExecutor(max_workers=1, thread_name_prefix="online-redis")
        self._in_flight: Future[ApplySummary] | None = None
        self._failed: BaseException | None = None

    def add(self, batch: list[RawMessage]) -> None:
        prepared = self.applier.prepare(batch)  # raises when the registry is down: the loop rewinds
        self._confirm()  # raises when the previous batch failed: this one is not handed over
        self._in_flight = self._redis.submit(self._execute, prepared)

    def _execute(self, prepared: PreparedBatch) -> ApplySummary:
        summary = self.applier.execute(prepared)
        record_metrics(summary)
        return summary

    def _settle(self) -> None:
        """Wait for the batch in flight; keep its failure for :meth:`_confirm`."""
        future, self._in_flight = self._in_flight, None
        if future is None:
            return
        try:
            future.result()
        except Exception as exc:  # noqa: BLE001 - raised again by _confirm, where the loop recovers
            self._failed = self._failed or exc

    def _confirm(self) -> None:
        """Wait for the batch in flight; raise if it (or one settled before) failed."""
        self._settle()
        failed, self._failed = self._failed, None
        if failed is not None:
            raise failed

    def resume(self, topic: str, partition: int) -> int | None:
        return None  # start at the consumer group's committed offset: Redis keeps no offsets

    def due(self) -> list[TP]:
        return []

    def holds(self, topic: str, partition: int) -> bool:
        return False  # nothing is buffered: a batch is in Redis's hands or failed (then flush raises)

    def flush(self, topic: str, partition: int) -> None:
        self._confirm()

    def flush_many(self, partitions: list[TP]) -> None:
        self._confirm()

    def discard(self, topic: str, partition: int) -> None:
        self._settle()

    def close(self) -> None:
        self._settle()
        self._redis.shutdown(wait=True)


def run_engine(bootstrap: KafkaTarget, prefix: str, applier: OnlineApplier, *, batch_size: int = 1000,
               session_timeout_ms: int = 10_000, until: Callable[[], bool] | None = None,
               install_signal_handlers: bool = True, health: WorkerHealth | None = None,
               fetch_wait_ms: int = FETCH_WAIT_MS) -> None:
    """Consume every group topic of ``prefix`` into the online store until SIGTERM/SIGINT (or ``until()``).

    ``fetch_wait_ms``: see :data:`FETCH_WAIT_MS`; 0 keeps librdkafka's fetch defaults."""
    fetch = {"fetch_wait_ms": fetch_wait_ms, "fetch_min_bytes": FETCH_MIN_BYTES} if fetch_wait_ms > 0 else {}
    consumer = open_consumer(bootstrap, online_group_id(prefix), session_timeout_ms=session_timeout_ms,
                             client_id=worker_client_id("processor"), **fetch)
    sink = OnlineSink(applier)
    loop = ConsumeLoop(consumer, sink, subscription_pattern(prefix), role="online processor",
                       logger=log, batch_size=batch_size, add_chunk=batch_size,
                       poll_timeout_s=0.5, idle_commit_s=1.0, greedy=True, health=health)
    if install_signal_handlers and threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: loop.stop())
    log.info("online processor (confluent engine): consumer group %r, pattern %r", online_group_id(prefix),
             loop.pattern)
    # As the faust engine does: start-up is over, keep full GC passes over long-lived objects (the
    # registry view, clients, compiled validators) off the per-batch path.
    settle_heap()
    try:
        loop.run(until=until)
    finally:
        sink.close()
