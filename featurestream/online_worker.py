"""The online path assembled: faust processor → route → Redis online store, with metrics.

``featurestream process`` runs :func:`run_processor`; ``featurestream replay --target online``
and ``rebuild-online`` use :class:`OnlineApplier` with a plain replay reader instead of faust.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence

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

    def __call__(self, batch: Sequence[RawMessage]) -> None:
        started = time.perf_counter()
        groups = self.groups()
        routed = route(batch, groups, prefix=self.registry.prefix, store="OnlineStore")
        if routed.unknown_groups:
            # A group created a moment ago may not be in our cached view yet: look once more.
            groups = self.groups(force=True)
            routed = route(batch, groups, prefix=self.registry.prefix, store="OnlineStore")
        poison = list(routed.poison)
        for name, items in routed.work.items():
            result = self.store.apply_batch(groups[name], items)
            for status, n in result.counts.items():
                ONLINE_METRICS.records.labels(group=name, status=status.value).inc(n)
            if result.rejected:  # rare: index the raw messages only then (this is the hot path)
                by_coords = {(r.topic, r.partition, r.offset): r for r in batch}
                topic = self.registry.topic_of(name)
                for (msg, partition, offset), status in zip(items, result.statuses, strict=True):
                    if status is WriteStatus.REJECTED:
                        reason = next((r for rid, r in result.rejected if rid == msg.id), "rejected")
                        log.warning("%s: record %r at %s/%d/%d not applied: %s", name, msg.id, topic, partition,
                                    offset, reason)
                        poison.append(Poison(by_coords[(topic, partition, offset)], reason))
        if routed.skipped:
            ONLINE_METRICS.records.labels(group="", status="skipped").inc(routed.skipped)
        if poison:
            self.deadletters.send(poison)
            ONLINE_METRICS.dead_lettered.inc(len(poison))
        ONLINE_METRICS.batch_seconds.observe(time.perf_counter() - started)


def make_online_applier(config: Config, *, stage: str = "online") -> OnlineApplier:
    bootstrap = config.require("kafka_bootstrap")
    registry = Registry(bootstrap, prefix=config.topic_prefix, offline_base_uri=config.offline_uri)
    store = OnlineStore.from_url(config.require("redis_url"), config.topic_prefix)
    deadletters = DeadLetters(Publisher(bootstrap), config.topic_prefix, stage)
    return OnlineApplier(registry, store, deadletters)


def run_processor(config: Config, *, metrics_port: int | None = None, batch_size: int = 1000,
                  batch_within_s: float = 0.005,
                  log_level: str = "info") -> None:
    """Run the faust online processor until interrupted."""
    import faust

    from featurestream.metrics import serve_metrics
    from streams.processor import build_online_app

    applier = make_online_applier(config)
    if metrics_port:
        serve_metrics(metrics_port)

    def list_topics() -> list[str]:
        return [applier.registry.topic_of(g.name) for g in applier.groups(force=True).values() if g.online_enabled]

    app = build_online_app(bootstrap=config.require("kafka_bootstrap"), prefix=config.topic_prefix,
                           apply_batch=applier, list_topics=list_topics, batch_size=batch_size,
                           batch_within_s=batch_within_s)
    worker = faust.Worker(app, loglevel=log_level, quiet=True)
    worker.execute_from_commandline()
