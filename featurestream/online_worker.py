"""The online path assembled: faust processor → route → Redis online store, with metrics.

``featurestream process`` runs :func:`run_processor`; ``featurestream replay --target online``
and ``rebuild-online`` use :class:`OnlineApplier` with a plain replay reader instead of faust.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from featurestream.config import Config
from featurestream.metrics import ONLINE_METRICS
from schemas.group import FeatureGroup
from sinks.online.status import WriteStatus
from sinks.online.store import OnlineStore
from streams.deadletter import DeadLetters
from streams.publisher import Publisher
from streams.registry import Registry
from streams.route import Poison, RawMessage, route

log = logging.getLogger("featurestream.online")


class OnlineApplier:
    """Applies raw batches to Redis: route, write-if-newer, dead-letter the poison. Thread-safe."""

    def __init__(self, registry: Registry, store: OnlineStore, deadletters: DeadLetters,
                 *, registry_max_age_s: float = 1.0) -> None:
        self.registry = registry
        self.store = store
        self.deadletters = deadletters
        self.registry_max_age_s = registry_max_age_s
        self._groups: dict[str, FeatureGroup] = {}
        self._groups_at = 0.0
        self._lock = threading.Lock()

    def groups(self, *, force: bool = False) -> dict[str, FeatureGroup]:
        with self._lock:
            if force or time.monotonic() - self._groups_at > self.registry_max_age_s:
                self._groups = self.registry.refresh()
                self._groups_at = time.monotonic()
            return self._groups

    def __call__(self, batch: Sequence[RawMessage]) -> ApplySummary:
        """Apply ``batch`` and count the outcome in this process's Prometheus metrics."""
        summary = self.apply(batch)
        record_metrics(summary)
        return summary

    def apply(self, batch: Sequence[RawMessage]) -> ApplySummary:
        """Apply ``batch``; the outcome comes back as counts (picklable: see apply_process)."""
        started = time.perf_counter()
        summary = ApplySummary()
        groups = self.groups()
        routed = route(batch, groups, prefix=self.registry.prefix, store="OnlineStore")
        if routed.unknown_groups:
            # A group created a moment ago may not be in our cached view yet: look once more.
            groups = self.groups(force=True)
            routed = route(batch, groups, prefix=self.registry.prefix, store="OnlineStore")
        poison = list(routed.poison)
        for name, items in routed.work.items():
            # route checked every message against its group: skip the store's second round of checks.
            result = self.store.apply_batch(groups[name], items, checked=True)
            for status, n in result.counts.items():
                summary.records[(name, status.value)] = summary.records.get((name, status.value), 0) + n
            if result.rejected:  # rare: index the raw messages only then (this is the hot path)
                by_coords = {(r.topic, r.partition, r.offset): r for r in batch}
                topic = self.registry.topic_of(name)
                for (msg, partition, offset), status in zip(items, result.statuses, strict=True):
                    if status is WriteStatus.REJECTED:
                        reason = next((r for rid, r in result.rejected if rid == msg.id), "rejected")
                        log.warning("%s: record %r at %s/%d/%d not applied: %s", name, msg.id, topic, partition,
                                    offset, reason)
                        poison.append(Poison(by_coords[(topic, partition, offset)], reason))
        summary.skipped = routed.skipped
        if poison:
            self.deadletters.send(poison)
            summary.dead_lettered = len(poison)
        summary.seconds = time.perf_counter() - started
        return summary


@dataclass
class ApplySummary:
    """What one batch did: ``records[(group, status)] = count``, plus the skipped and poison counts."""

    records: dict[tuple[str, str], int] = field(default_factory=dict)
    skipped: int = 0
    dead_lettered: int = 0
    seconds: float = 0.0


def record_metrics(summary: ApplySummary) -> None:
    for (group, status), n in summary.records.items():
        ONLINE_METRICS.records.labels(group=group, status=status).inc(n)
    if summary.skipped:
        ONLINE_METRICS.records.labels(group="", status="skipped").inc(summary.skipped)
    if summary.dead_lettered:
        ONLINE_METRICS.dead_lettered.inc(summary.dead_lettered)
    ONLINE_METRICS.batch_seconds.observe(summary.seconds)


def make_online_applier(config: Config, *, stage: str = "online") -> OnlineApplier:
    bootstrap = config.require("kafka_bootstrap")
    registry = Registry(bootstrap, prefix=config.topic_prefix, offline_base_uri=config.offline_uri)
    store = OnlineStore.from_url(config.require("redis_url"), config.topic_prefix)
    deadletters = DeadLetters(Publisher(bootstrap), config.topic_prefix, stage)
    return OnlineApplier(registry, store, deadletters)


def run_processor(config: Config, *, metrics_port: int | None = None, batch_size: int = 1000,
                  batch_within_s: float = 0.005, apply_in_thread: bool = False,
                  log_level: str = "info") -> None:
    """Run the faust online processor until interrupted.

    Batches are applied in a child process (featurestream.apply_process) so that faust and the
    apply step each get a core; ``apply_in_thread`` keeps everything in one process (one core,
    less memory).
    """
    import faust

    from featurestream.metrics import serve_metrics
    from streams.processor import build_online_app

    registry = Registry(config.require("kafka_bootstrap"), prefix=config.topic_prefix,
                        offline_base_uri=config.offline_uri)
    if apply_in_thread:
        applier = make_online_applier(config)

        async def apply_batch(batch: Sequence[RawMessage]) -> ApplySummary:
            return await asyncio.get_running_loop().run_in_executor(None, applier, batch)
    else:
        from featurestream.apply_process import ApplierProcess

        apply_batch = ApplierProcess(config)
    if metrics_port:
        serve_metrics(metrics_port)

    def list_topics() -> list[str]:
        return [registry.topic_of(g.name) for g in registry.refresh().values() if g.online_enabled]

    app = build_online_app(bootstrap=config.require("kafka_bootstrap"), prefix=config.topic_prefix,
                           apply_batch=apply_batch, list_topics=list_topics, batch_size=batch_size,
                           batch_within_s=batch_within_s)
    worker = faust.Worker(app, loglevel=log_level, quiet=True)
    try:
        worker.execute_from_commandline()
    finally:
        close = getattr(apply_batch, "close", None)
        if close is not None:
            close()
