"""The offline sink's main: ``featurestream sink`` runs :func:`run_sink`.

Kafka → route → OfflineWriter (an Apache Iceberg table per group, Parquet data files on S3 or a
path, registered in a SQL catalog), with dead letters, metrics and background maintenance. The
consume-and-commit loop is ``streams/consume_loop.py``: it resumes from the Kafka offsets each table records,
committed with the rows in one snapshot. The apply step is ``applier.py``, maintenance
``compactor.py``.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from schemas.errors import ValidationError
from sinks.offline.catalog import OfflineTables
from sinks.offline.maintenance import DEFAULT_RETENTION_S, DEFAULT_TARGET_BYTES, STEPS
from sinks.offline.partition_writer import STAGES, FlushResult
from sinks.offline.rotation import RotationPolicy
from sinks.offline.writer import OfflineWriter
from streams.client_id import worker_client_id
from streams.consume_loop import ConsumeLoop, open_consumer, subscription_pattern
from streams.deadletter import DeadLetters
from streams.gc_tuning import freeze_heap
from streams.group_view import GroupView
from streams.health import WorkerHealth
from streams.kafka_client import KafkaTarget
from streams.metrics import OFFLINE_METRICS
from streams.metrics_server import serve_metrics
from streams.offline.applier import OfflineApplier
from streams.offline.compactor import BackgroundCompactor
from streams.publisher import Publisher
from streams.registry import Registry

log = logging.getLogger("featurestream.offline")


@dataclass(frozen=True)
class SinkSettings:
    """The sink's knobs (CLI flags); defaults make rows queryable within a minute."""

    policy: RotationPolicy = field(default_factory=RotationPolicy)
    compact_every_s: float = 300.0        # 0: no background compaction
    target_bytes: int = DEFAULT_TARGET_BYTES
    retention_s: float = DEFAULT_RETENTION_S   # time travel by commit window; orphans older are removed
    maintain_every_s: float = 3600.0      # snapshot expiry + orphan removal
    batch_size: int = 5000
    instance_id: str | None = None        # static group membership (fast restarts)
    session_timeout_ms: int = 6000
    # Tests only: SIGKILL this process right after the named compaction step (maintenance.STEPS),
    # to prove a crash at that exact point loses and doubles nothing.
    kill_at_compaction_step: str | None = None
    # Tests only: SIGKILL at ``kill_stage`` of the flush number ``kill_after_flushes`` (counting
    # flushes that write rows): "before_upload", "after_upload" (files uploaded, not committed) or
    # "after_commit" (committed to the table, not to the consumer group).
    kill_after_flushes: int | None = None
    kill_stage: str = "after_commit"
    # Tests only: a consumer group id other than "<prefix>-offline", so two sinks both believe
    # they own every partition (a zombie); the table must refuse one of them.
    consumer_group: str | None = None


def consumer_group_id(prefix: str) -> str:
    return f"{prefix}-offline"


def run_sink(bootstrap: KafkaTarget, prefix: str, offline_uri: str, catalog_uri: str,
             storage_options: Mapping[str, Any] | None = None, settings: SinkSettings | None = None, *,
             metrics_port: int | None = None, metrics_host: str = "127.0.0.1",
             on_metrics_port: Callable[[int], None] | None = None, until: Callable[[], bool] | None = None,
             install_signal_handlers: bool = True) -> None:
    """Run the offline sink until SIGTERM/SIGINT (or ``until()``); flush and commit on the way out.

    ``metrics_port`` serves /metrics, /health and /ready (a free port if it is taken; the one
    bound is passed to ``on_metrics_port``).
    """
    settings = settings or SinkSettings()
    registry = Registry(bootstrap, prefix=prefix, offline_base_uri=offline_uri)
    groups = GroupView(registry.refresh)
    tables = OfflineTables.open(catalog_uri, prefix, storage_options, is_current=groups.is_current)
    groups.all(fresh=True)  # fail fast, with a clear error, if Kafka is not there
    deadletters = DeadLetters(Publisher(bootstrap), prefix, "offline")
    kill = _FlushKiller(settings.kill_after_flushes, settings.kill_stage)
    writer = OfflineWriter(tables, settings.policy, stage_hook=kill.stage)
    applier = OfflineApplier(groups, writer, deadletters, prefix, after_flush=kill.after_commit)
    group_id = settings.consumer_group or consumer_group_id(prefix)
    consumer = open_consumer(bootstrap, group_id, instance_id=settings.instance_id,
                             session_timeout_ms=settings.session_timeout_ms, client_id=worker_client_id("sink"))
    compactor: BackgroundCompactor | None = None
    health = WorkerHealth()
    sink = ConsumeLoop(consumer, applier, subscription_pattern(prefix), role="offline sink", logger=log,
                       batch_size=settings.batch_size, add_chunk=min(settings.batch_size, settings.policy.max_records),
                       on_committed=lambda _: OFFLINE_METRICS.last_commit.set(time.time()), health=health)
    OFFLINE_METRICS.uncommitted.set_function(lambda: sink.uncommitted_records)
    if settings.compact_every_s > 0:
        compactor = BackgroundCompactor(
            tables, groups, prefix, sink.assignment, every_s=settings.compact_every_s,
            target_bytes=settings.target_bytes, retention_s=settings.retention_s,
            maintain_every_s=settings.maintain_every_s, storage_options=storage_options,
            hook=_kill_hook(settings.kill_at_compaction_step))
        compactor.start()
    if metrics_port:
        server = serve_metrics(metrics_port, metrics_host, ready=health.readiness, role="offline sink")
        if on_metrics_port is not None:
            on_metrics_port(server.port)
    if install_signal_handlers and threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: sink.stop())
    log.info("offline sink: consumer group %r, pattern %r, tables under %r in namespace %r", group_id,
             sink.pattern, offline_uri, prefix)
    # Start-up is over: full GC passes no longer walk the clients', catalog's and modules' objects.
    freeze_heap()
    try:
        sink.run(until=until)
    finally:
        if compactor is not None:
            compactor.stop()
        registry.close()
        deadletters.publisher.close()


class _FlushKiller:
    """Test hook: SIGKILL at one stage of the n-th flush that writes rows (see SinkSettings)."""

    def __init__(self, n: int | None, stage: str) -> None:
        if stage not in (*STAGES, "after_commit"):
            raise ValidationError(f"kill_stage must be one of {', '.join((*STAGES, 'after_commit'))}; got {stage!r}")
        self.n = n
        self.kill_at = stage
        self.seen = 0

    def _kill(self, where: str) -> None:
        log.warning("killing the sink at %s of flush %d (test hook)", where, self.seen)
        os.kill(os.getpid(), signal.SIGKILL)

    def stage(self, name: str) -> None:
        if self.n is None:
            return
        if name == "before_upload":
            self.seen += 1  # counts flushes (offsets-only flushes included: they commit too)
        if name == self.kill_at and self.seen >= self.n:
            self._kill(name)

    def after_commit(self, result: FlushResult) -> None:
        if self.n is not None and self.kill_at == "after_commit" and result.rows and self.seen >= self.n:
            self._kill("after_commit (before the consumer-group commit)")

def _kill_hook(step: str | None) -> Callable[[str], None] | None:
    if step is None:
        return None
    if step not in STEPS:
        raise ValidationError(f"kill_at_compaction_step must be one of {', '.join(STEPS)}; got {step!r}")

    def hook(name: str) -> None:
        if name == step:
            log.warning("killing the sink at compaction step %r (test hook)", name)
            os.kill(os.getpid(), signal.SIGKILL)

    return hook
