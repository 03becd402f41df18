"""The online processor's confluent-kafka engine: the consume-and-commit loop shared with the
offline sink (``streams/consume_loop.py``) driving the online apply step, with no faust in between.

Why a second engine: faust hands every event through asyncio machinery (tasks, events, acks)
that costs tens of CPU-µs per record before the apply step starts, on a machine where the
processor competes with Kafka, Redis and the load for two cores. Here a batch is one C call
(``consume``), then route → write-if-newer in Redis (``applier.py``), then offsets are committed
once a second, always after Redis applied everything below them.

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

from streams.client_id import worker_client_id
from streams.consume_loop import TP, ConsumeLoop, open_consumer, subscription_pattern
from streams.gc_tuning import settle_heap
from streams.health import WorkerHealth
from streams.kafka_client import KafkaTarget
from streams.online.applier import OnlineApplier
from streams.route import RawMessage

log = logging.getLogger("featurestream.online")


def online_group_id(prefix: str) -> str:
    return f"{prefix}-online"


class OnlineSink:
    """The online store as a ``PartitionSink``: ``add`` applies at once, so nothing is ever held
    and every consumed offset may be committed (the loop does, once a second)."""

    def __init__(self, applier: OnlineApplier) -> None:
        self.applier = applier

    def add(self, batch: list[RawMessage]) -> None:
        self.applier(batch)  # raises when Redis fails: the loop rewinds and retries

    def resume(self, topic: str, partition: int) -> int | None:
        return None  # start at the consumer group's committed offset: Redis keeps no offsets

    def due(self) -> list[TP]:
        return []

    def holds(self, topic: str, partition: int) -> bool:
        return False

    def flush(self, topic: str, partition: int) -> None:
        return None

    def flush_many(self, partitions: list[TP]) -> None:
        return None

    def discard(self, topic: str, partition: int) -> None:
        return None


def run_engine(bootstrap: KafkaTarget, prefix: str, applier: OnlineApplier, *, batch_size: int = 1000,
               session_timeout_ms: int = 10_000, until: Callable[[], bool] | None = None,
               install_signal_handlers: bool = True, health: WorkerHealth | None = None) -> None:
    """Consume every group topic of ``prefix`` into the online store until SIGTERM/SIGINT (or ``until()``)."""
    consumer = open_consumer(bootstrap, online_group_id(prefix), session_timeout_ms=session_timeout_ms,
                             client_id=worker_client_id("processor"))
    loop = ConsumeLoop(consumer, OnlineSink(applier), subscription_pattern(prefix), role="online processor",
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
    loop.run(until=until)
