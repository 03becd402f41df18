"""The offline path assembled: Kafka → route → OfflineWriter (Parquet on S3 or a path), with
dead letters, metrics, background compaction, and the idempotent offline replay.

``featurestream sink`` runs :func:`run_sink`; ``featurestream replay --target offline`` runs
:func:`replay_offline`.

Compaction ownership: exactly one process may compact a table at a time (two compactors
merging the same inputs would both commit manifests: duplicates). The sink that currently
owns partition 0 of a group's topic compacts that group's table; Kafka's group protocol
makes that owner unique, and the revoke callback waits for a compaction in progress to end
before the partition is handed over. ``recover`` (roll back/forward a compaction a crash
interrupted) runs under the same rule, once when a table is first owned and before every
compaction pass.
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

from featurestream.config import Config
from featurestream.metrics import OFFLINE_METRICS
from schemas.errors import ValidationError
from schemas.group import FeatureGroup
from schemas.names import group_from_topic, group_topic
from schemas.wire import encode
from sinks.offline import layout
from sinks.offline.catalog import read_manifests, relative, table_path_of
from sinks.offline.compaction import DEFAULT_TARGET_BYTES, STEPS, compact_table, recover
from sinks.offline.errors import OfflineRowError
from sinks.offline.fs import delete_quietly_missing, find_files, open_filesystem
from sinks.offline.partition_writer import FlushResult
from sinks.offline.rotation import RotationPolicy
from sinks.offline.writer import OfflineWriter, table_path_for
from streams.deadletter import DeadLetters
from streams.lag import committed_offsets
from streams.publisher import Publisher
from streams.registry import Registry
from streams.route import Poison, RawMessage, route
from streams.sink_consumer import (
    TP,
    SinkConsumer,
    consumer_group_id,
    open_consumer,
    subscription_pattern,
)

log = logging.getLogger("featurestream.offline")
OFFLINE_STORE = "OfflineStore"


class OfflineApplier:
    """Routes raw batches into the OfflineWriter; implements streams.sink_consumer.PartitionSink."""

    def __init__(self, groups: Callable[..., Mapping[str, FeatureGroup]], writer: OfflineWriter,
                 deadletters: DeadLetters | None, prefix: str, *,
                 after_flush: Callable[[FlushResult], None] | None = None) -> None:
        self._groups = groups
        self._after_flush = after_flush  # tests crash the process here: files durable, offsets not committed
        self.writer = writer
        self.deadletters = deadletters
        self.prefix = prefix
        self._held: set[TP] = set()  # partitions with rows added since their last flush
        self.poison_count = 0

    def add(self, batch: list[RawMessage]) -> None:
        groups = self._groups()
        routed = route(batch, groups, prefix=self.prefix, store=OFFLINE_STORE)
        if routed.unknown_groups:
            # A group created a moment ago may not be in the cached view yet: look once more.
            groups = self._groups(force=True)
            routed = route(batch, groups, prefix=self.prefix, store=OFFLINE_STORE)
        poison = list(routed.poison)
        by_coords = {(r.topic, r.partition, r.offset): r for r in batch}
        for name, items in routed.work.items():
            group = groups[name]
            topic = group_topic(self.prefix, name)
            for msg, partition, offset in items:
                try:
                    self.writer.add(group, msg, topic, partition, offset)
                except OfflineRowError as exc:  # e.g. an event time outside years 1-9999
                    poison.append(Poison(by_coords[(topic, partition, offset)], str(exc)))
                    continue
                self._held.add((topic, partition))
        self._dead_letter(poison)

    def _dead_letter(self, poison: list[Poison]) -> None:
        if not poison:
            return
        for p in poison:
            log.warning("dead-lettering %s[%d]@%d: %s", p.raw.topic, p.raw.partition, p.raw.offset, p.reason)
        self.poison_count += len(poison)
        if self.deadletters is not None:
            self.deadletters.send(poison)  # synchronous: durable before the offset is committed
        OFFLINE_METRICS.dead_lettered.inc(len(poison))

    def due(self) -> list[TP]:
        return self.writer.due()

    def holds(self, topic: str, partition: int) -> bool:
        return (topic, partition) in self._held

    def flush(self, topic: str, partition: int) -> FlushResult:
        started = time.perf_counter()
        result = self.writer.flush(topic, partition)
        self._held.discard((topic, partition))
        group = group_from_topic(self.prefix, topic) or ""
        if result.files:
            OFFLINE_METRICS.flush_seconds.observe(time.perf_counter() - started)
            OFFLINE_METRICS.files_written.labels(group=group).inc(len(result.files))
            OFFLINE_METRICS.rows_written.labels(group=group).inc(result.rows)
        if result.rejected:
            # The raw bytes are gone by now (only decoded messages are buffered): re-encode them
            # in the wire format, which decodes to the same message.
            poison = []
            for (msg, t, p, offset), exc in result.rejected:
                value, key, headers = _encoded(msg)
                poison.append(Poison(RawMessage(t, p, offset, key, value, headers), str(exc)))
            self._dead_letter(poison)
        if self._after_flush is not None:
            self._after_flush(result)
        return result

    def discard(self, topic: str, partition: int) -> None:
        self.writer.discard(topic, partition)
        self._held.discard((topic, partition))


def _encoded(msg: Any) -> tuple[bytes, bytes | None, list[tuple[str, bytes]]]:
    """(value, key, headers) of a buffered message, as close to the original bytes as possible."""
    try:
        key, value, headers = encode(msg)
    except (TypeError, ValueError):  # a value JSON cannot carry (what got it rejected): keep its text
        return repr(msg).encode("utf-8", "replace")[:100_000], str(msg.id).encode(), []
    return value, key, headers


class CachedGroups:
    """The registry's groups, refreshed at most every ``max_age_s`` (or when forced)."""

    def __init__(self, registry: Registry, max_age_s: float = 1.0) -> None:
        self.registry = registry
        self.max_age_s = max_age_s
        self._groups: dict[str, FeatureGroup] = {}
        self._at = float("-inf")
        self._lock = threading.Lock()

    def __call__(self, *, force: bool = False) -> dict[str, FeatureGroup]:
        with self._lock:
            if force or time.monotonic() - self._at > self.max_age_s:
                self._groups = self.registry.refresh()
                self._at = time.monotonic()
            return self._groups


class BackgroundCompactor:
    """Compacts the tables whose topic's partition 0 this sink owns, every ``every_s`` seconds."""

    def __init__(self, fs: Any, root: str, groups: Callable[..., Mapping[str, FeatureGroup]], prefix: str,
                 owned: Callable[[], set[TP]], committed: Callable[[list[str]], Mapping[TP, int]], *,
                 every_s: float, target_bytes: int = DEFAULT_TARGET_BYTES, input_grace_s: float = 60.0,
                 hook: Callable[[str], None] | None = None) -> None:
        self.fs = fs
        self.root = root
        self.groups = groups
        self.prefix = prefix
        self.owned = owned
        self.committed = committed
        self.every_s = every_s
        self.target_bytes = target_bytes
        self.input_grace_s = input_grace_s
        self.hook = hook  # called after each compaction step (tests crash the process there)
        self.runs = 0
        self._recovered: set[str] = set()
        self._busy = threading.Lock()  # held while one table is compacted/recovered
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="offline-compactor", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = 60.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def wait_idle(self, revoked: list[TP]) -> None:
        """Revoke callback: a table whose partition 0 is leaving must not be mid-compaction."""
        if any(p == 0 for _, p in revoked):
            with self._busy:
                for topic, p in revoked:
                    if p == 0:
                        self._recovered.discard(topic)

    def _owned_tables(self) -> list[tuple[str, FeatureGroup]]:
        owned = self.owned()
        groups = self.groups()
        out = []
        for g in groups.values():
            topic = group_topic(self.prefix, g.name)
            if g.offline_enabled and (topic, 0) in owned:
                out.append((topic, g))
        return sorted(out, key=lambda x: x[0])

    def _loop(self) -> None:
        next_compaction = time.monotonic() + self.every_s
        while not self._stop.wait(1.0):
            try:
                self.recover_new()
                if time.monotonic() >= next_compaction:
                    self.compact_once()
                    next_compaction = time.monotonic() + self.every_s
            except Exception as exc:  # noqa: BLE001 - the sink must keep writing; retry next pass
                OFFLINE_METRICS.compaction_runs.labels(outcome="failed").inc()
                log.error("background compaction failed (retrying in %.0f s): %s", self.every_s, exc)
                next_compaction = time.monotonic() + self.every_s

    def recover_new(self) -> None:
        """``recover`` each table once when it is first owned (the sink's start, a rebalance)."""
        for topic, g in self._owned_tables():
            if topic in self._recovered:
                continue
            with self._busy:
                if (topic, 0) not in self.owned():
                    continue
                done = recover(self.fs, table_path_for(self.fs, self.root, g), input_grace_s=self.input_grace_s)
                self._recovered.add(topic)
            if any(done.values()):
                log.info("%s: recovered an interrupted compaction: %s", g.name, done)

    def compact_once(self) -> int:
        """One pass over the owned tables; returns the number of files merged away."""
        tables = self._owned_tables()
        if not tables:
            return 0
        committed = self.committed([t for t, _ in tables])
        merged = 0
        for topic, g in tables:
            if self._stop.is_set():
                break
            with self._busy:
                if (topic, 0) not in self.owned():
                    continue  # revoked meanwhile
                results = compact_table(self.fs, table_path_for(self.fs, self.root, g), committed,
                                        target_bytes=self.target_bytes, input_grace_s=self.input_grace_s,
                                        hook=self.hook)
            n = sum(len(r.inputs) for r in results)
            merged += n
            OFFLINE_METRICS.compaction_runs.labels(outcome="ok").inc()
            OFFLINE_METRICS.compacted_files.inc(n)
            if results:
                log.info("%s: compacted %d files into %d", g.name, n, len(results))
        self.runs += 1
        return merged


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


def run_sink(config: Config, settings: SinkSettings | None = None, *, metrics_port: int | None = None,
             until: Callable[[], bool] | None = None, install_signal_handlers: bool = True) -> None:
    """Run the offline sink until SIGTERM/SIGINT (or ``until()``); flush and commit on the way out."""
    settings = settings or SinkSettings()
    bootstrap = config.require("kafka_bootstrap")
    fs, root = open_filesystem(config.require("offline_uri"), config.storage_options())
    registry = Registry(bootstrap, prefix=config.topic_prefix, offline_base_uri=config.offline_uri)
    groups = CachedGroups(registry)
    groups(force=True)  # fail fast, with a clear error, if Kafka is not there
    deadletters = DeadLetters(Publisher(bootstrap), config.topic_prefix, "offline")
    applier = OfflineApplier(groups, OfflineWriter(fs, root, settings.policy), deadletters, config.topic_prefix,
                             after_flush=_kill_after_flushes(settings.kill_after_flushes))
    group_id = consumer_group_id(config.topic_prefix)
    consumer = open_consumer(bootstrap, group_id, instance_id=settings.instance_id,
                             session_timeout_ms=settings.session_timeout_ms)
    compactor: BackgroundCompactor | None = None
    holder: dict[str, SinkConsumer] = {}

    def on_revoked(revoked: list[TP]) -> None:
        if compactor is not None:
            compactor.wait_idle(revoked)

    sink = SinkConsumer(consumer, applier, subscription_pattern(config.topic_prefix),
                        batch_size=settings.batch_size, add_chunk=min(1000, settings.policy.max_records),
                        on_revoked=on_revoked)
    holder["sink"] = sink
    if settings.compact_every_s > 0:
        compactor = BackgroundCompactor(
            fs, root, groups, config.topic_prefix, sink.assignment,
            lambda topics: committed_offsets(bootstrap, group_id, topics),
            every_s=settings.compact_every_s, target_bytes=settings.target_bytes,
            input_grace_s=settings.input_grace_s, hook=_kill_hook(settings.kill_at_compaction_step))
        compactor.start()
    if metrics_port:
        from featurestream.metrics import serve_metrics

        serve_metrics(metrics_port)
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


def retire_empty_manifests(fs: Any, table_uri: str) -> int:
    """Delete compaction manifests whose output and inputs are all gone (e.g. an output deleted by hand).

    Such a manifest still hides its input *names*: a replayed file that happened to take one
    of those names would be invisible, and a later ``recover`` would delete it. Deleting
    it is safe for any process: a compactor's own in-flight manifest always has its output.
    """
    table_path = table_path_of(fs, table_uri)
    existing = {relative(table_path, p) for p in find_files(fs, layout.data_root(table_path))}
    empty = [layout.manifest_path(table_path, m.id) for m in read_manifests(fs, table_path).values()
             if m.output not in existing and not any(i in existing for i in m.inputs)]
    delete_quietly_missing(fs, empty)
    return len(empty)
