"""The online apply step: route a raw batch, write-if-newer into Redis, dead-letter the poison.

Used by the processor (``streams/online/worker.py``, through the apply child) and by replay
and rebuild (``streams/replay.py``) with a plain replay reader instead of faust.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from schemas.names import group_topic
from sinks.online.status import WriteStatus
from sinks.online.store import OnlineStore
from streams.deadletter import DeadLetters
from streams.freshness import FRESHNESS, BucketCounts, count_batch
from streams.group_view import GroupView
from streams.kafka_client import KafkaTarget
from streams.metrics import ONLINE_METRICS
from streams.online.aggregate_step import AggregateStep
from streams.publisher import Publisher
from streams.registry import Registry
from streams.route import Poison, RawMessage, route_batch

log = logging.getLogger("featurestream.online")


class OnlineApplier:
    """Applies raw batches to Redis: route, write-if-newer, dead-letter the poison. Thread-safe."""

    def __init__(self, groups: GroupView, prefix: str, store: OnlineStore, deadletters: DeadLetters, *,
                 freshness: bool = False, backfill: bool = False) -> None:
        self.groups = groups
        self.prefix = prefix
        self.store = store
        self.deadletters = deadletters
        self.freshness = freshness  # the live path only: a replay's or a rebuild's records are old by design
        self.aggregate = AggregateStep(store.aggregates, prefix, backfill=backfill)
        # A replay of an aggregation group folds its source's events only, and leaves the source's
        # latest-value records alone (streams/replay.py).
        self.aggregates_only = False

    def __call__(self, batch: Sequence[RawMessage]) -> ApplySummary:
        """Apply ``batch`` and count the outcome in this process's Prometheus metrics."""
        summary = self.apply(batch)
        record_metrics(summary)
        return summary

    def apply(self, batch: Sequence[RawMessage]) -> ApplySummary:
        """Apply ``batch``; the outcome comes back as counts (picklable: see apply_child)."""
        started = time.perf_counter()
        summary = ApplySummary()
        routed, groups = route_batch(batch, self.groups, prefix=self.prefix, store="OnlineStore")
        poison = list(routed.poison)
        for name, items in ({} if self.aggregates_only else routed.work).items():
            # route checked every message against its group: skip the store's second round of checks.
            result = self.store.apply_batch(groups[name], items, checked=True)
            if self.freshness:
                fresh = count_batch([m.api_invocation_time_ns for m, _, _ in items], time.time_ns())
                if fresh is not None:
                    summary.freshness[name] = fresh
            for status, n in result.counts.items():
                summary.records[(name, status.value)] = summary.records.get((name, status.value), 0) + n
            if result.rejected:  # rare: index the raw messages only then (this is the hot path)
                by_coords = {(r.topic, r.partition, r.offset): r for r in batch}
                topic = group_topic(self.prefix, name)
                for (msg, partition, offset), status in zip(items, result.statuses, strict=True):
                    if status is WriteStatus.REJECTED:
                        reason = next((r for rid, r in result.rejected if rid == msg.id), "rejected")
                        log.warning("%s: record %r at %s/%d/%d not applied: %s", name, msg.id, topic, partition,
                                    offset, reason)
                        poison.append(Poison(by_coords[(topic, partition, offset)], reason))
        if routed.sources:  # sources of aggregation groups: fold their events (aggregate_step.py)
            counts, late = self.aggregate(routed.sources, groups, batch)
            for key, n in counts.items():
                summary.records[key] = summary.records.get(key, 0) + n
            poison += late
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
    freshness: dict[str, BucketCounts] = field(default_factory=dict)  # group -> publish-to-applied latencies


def record_metrics(summary: ApplySummary) -> None:
    for (group, status), n in summary.records.items():
        ONLINE_METRICS.records.labels(group=group, status=status).inc(n)
    if summary.skipped:
        ONLINE_METRICS.records.labels(group="", status="skipped").inc(summary.skipped)
    if summary.dead_lettered:
        ONLINE_METRICS.dead_lettered.inc(summary.dead_lettered)
    ONLINE_METRICS.batch_seconds.observe(summary.seconds)
    for group, counts in summary.freshness.items():
        FRESHNESS.add("online", group, counts)


def make_online_applier(bootstrap: KafkaTarget, redis_url: str, prefix: str, *, offline_uri: str | None = None,
                        stage: str = "online") -> OnlineApplier:
    """An applier with its own registry view, Redis client and dead-letter producer."""
    registry = Registry(bootstrap, prefix=prefix, offline_base_uri=offline_uri)
    store = OnlineStore.from_url(redis_url, prefix)
    deadletters = DeadLetters(Publisher(bootstrap), prefix, stage)
    # Anything but the live path (replay, rebuild, the healer) folds aggregates in the backfill lane.
    return OnlineApplier(GroupView(registry.refresh), prefix, store, deadletters, freshness=stage == "online",
                         backfill=stage != "online")
