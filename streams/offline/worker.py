"""The offline sink's main: ``featurestream sink`` runs :func:`run_sink`.

Kafka → route → OfflineWriter (Parquet on S3 or a path), with dead letters, metrics and
background compaction. The consume-and-commit loop is ``consumer.py``: offsets are committed
only after the files they cover are durable. The apply step is ``applier.py``, compaction
ownership ``compactor.py``.
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
from sinks.offline.compaction import DEFAULT_TARGET_BYTES, STEPS
from sinks.offline.fs import open_filesystem
from sinks.offline.partition_writer import FlushResult
from sinks.offline.rotation import RotationPolicy
from sinks.offline.writer import OfflineWriter
from streams.deadletter import DeadLetters
from streams.group_view import GroupView
from streams.health import WorkerHealth
from streams.lag import committed_offsets
from streams.metrics import OFFLINE_METRICS
from streams.metrics_server import serve_metrics
from streams.offline.applier import OfflineApplier
from streams.offline.compactor import BackgroundCompactor
from streams.offline.consumer import (
    TP,
    SinkConsumer,
    consumer_group_id,
    open_consumer,
    subscription_pattern,
)
from streams.publisher import Publisher
from streams.registry import Registry

log = logging.getLogger("featurestream.offline")


@dataclass(frozen=True)
class SinkSettings:
    """The sink's knobs (CLI flags); defaults make rows queryable within a minute."""

    policy: RotationPolicy = field(default_factory=RotationPolicy)
    compact_every_s: float = 300.0        # 0: no background compaction
    target_bytes: int = DEFAULT_TARGET_BYTES
    input_grace_s: float = 60.0           # compacted inputs stay readable this long for open queries
    batch_size: int = 5000
    instance_id: str | None = None        # static group membership (fast restarts)
    session_timeout_ms: int = 6000
    # Tests only: SIGKILL this process right after the named compaction step (compaction.STEPS),
    # to prove a crash at that exact point loses and doubles nothing.
    kill_at_compaction_step: str | None = None
    # Tests only: SIGKILL after this many flushes wrote files, before their offsets are committed.
    kill_after_flushes: int | None = None


def run_sink(bootstrap: str, prefix: str, offline_uri: str, storage_options: Mapping[str, Any] | None = None,
             settings: SinkSettings | None = None, *, metrics_port: int | None = None,
             metrics_host: str = "127.0.0.1", on_metrics_port: Callable[[int], None] | None = None,
             until: Callable[[], bool] | None = None, install_signal_handlers: bool = True) -> None:
    """Run the offline sink until SIGTERM/SIGINT (or ``until()``); flush and commit on the way out.

    ``metrics_port`` serves /metrics, /health and /ready (a free port if it is taken; the one
    bound is passed to ``on_metrics_port``).
    """
    settings = settings or SinkSettings()
    fs, root = open_filesystem(offline_uri, dict(storage_options or {}))
    registry = Registry(bootstrap, prefix=prefix, offline_base_uri=offline_uri)
    groups = GroupView(registry.refresh)
    groups.all(fresh=True)  # fail fast, with a clear error, if Kafka is not there
    deadletters = DeadLetters(Publisher(bootstrap), prefix, "offline")
    applier = OfflineApplier(groups, OfflineWriter(fs, root, settings.policy), deadletters, prefix,
                             after_flush=_kill_after_flushes(settings.kill_after_flushes))
    group_id = consumer_group_id(prefix)
    consumer = open_consumer(bootstrap, group_id, instance_id=settings.instance_id,
                             session_timeout_ms=settings.session_timeout_ms)
    compactor: BackgroundCompactor | None = None
    holder: dict[str, SinkConsumer] = {}

    def on_revoked(revoked: list[TP]) -> None:
        if compactor is not None:
            compactor.wait_idle(revoked)

    health = WorkerHealth()
    sink = SinkConsumer(consumer, applier, subscription_pattern(prefix),
                        batch_size=settings.batch_size, add_chunk=min(1000, settings.policy.max_records),
                        on_revoked=on_revoked, on_committed=lambda _: OFFLINE_METRICS.last_commit.set(time.time()),
                        health=health)
    holder["sink"] = sink
    OFFLINE_METRICS.uncommitted.set_function(lambda: sink.uncommitted_records)
    if settings.compact_every_s > 0:
        compactor = BackgroundCompactor(
            fs, root, groups, prefix, sink.assignment,
            lambda topics: committed_offsets(bootstrap, group_id, topics),
            every_s=settings.compact_every_s, target_bytes=settings.target_bytes,
            input_grace_s=settings.input_grace_s, hook=_kill_hook(settings.kill_at_compaction_step))
        compactor.start()
    if metrics_port:
        server = serve_metrics(metrics_port, metrics_host, ready=health.readiness, role="offline sink")
        if on_metrics_port is not None:
            on_metrics_port(server.port)
    if install_signal_handlers and threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: sink.stop())
    log.info("offline sink: consumer group %r, pattern %r, writing under %r", group_id, sink.pattern, root)
    try:
        sink.run(until=until)
    finally:
        if compactor is not None:
            compactor.stop()
        registry.close()
        deadletters.publisher.close()


def _kill_after_flushes(n: int | None) -> Callable[[FlushResult], None] | None:
    if n is None:
        return None
    seen = [0]

    def hook(result: FlushResult) -> None:
        seen[0] += bool(result.files)
        if seen[0] >= n:
            log.warning("killing the sink after flush %d, before its commit (test hook)", seen[0])
            os.kill(os.getpid(), signal.SIGKILL)

    return hook


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
