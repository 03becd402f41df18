"""Background compaction of the offline tables this sink owns.

Exactly one process may compact a table at a time (two compactors merging the same inputs
would both commit manifests: duplicates). The sink that currently owns partition 0 of a
group's topic compacts that group's table; Kafka's group protocol makes that owner unique,
and the revoke callback waits for a compaction in progress to end before the partition is
handed over. ``recover`` (roll back/forward a compaction a crash interrupted) runs under the
same rule, once when a table is first owned and before every compaction pass.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from schemas.group import FeatureGroup
from schemas.names import group_topic
from sinks.offline import layout
from sinks.offline.catalog import read_manifests, relative, table_path_of
from sinks.offline.compaction import DEFAULT_TARGET_BYTES, compact_table, recover
from sinks.offline.fs import delete_quietly_missing, find_files
from sinks.offline.writer import table_path_for
from streams.backoff import Backoff
from streams.group_view import GroupView
from streams.metrics import OFFLINE_METRICS
from streams.offline.consumer import TP

log = logging.getLogger("featurestream.offline")


class BackgroundCompactor:
    """Compacts the tables whose topic's partition 0 this sink owns, every ``every_s`` seconds."""

    def __init__(self, fs: Any, root: str, groups: GroupView, prefix: str,
                 owned: Callable[[], set[TP]], committed: Callable[[list[str]], Mapping[TP, int]], *,
                 every_s: float, target_bytes: int = DEFAULT_TARGET_BYTES, input_grace_s: float = 60.0,
                 hook: Callable[[str], None] | None = None, retry_cap_s: float = 300.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
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
        self._clock = clock
        # While the broker or S3 is away every pass fails: retry after 1, 2, 4 ... retry_cap_s
        # seconds, logging once per attempt, instead of once a second.
        self._retry = Backoff(1.0, max(1.0, retry_cap_s), clock=clock)
        self._next_compaction = clock() + every_s
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
        groups = self.groups.all()
        out = []
        for g in groups.values():
            topic = group_topic(self.prefix, g.name)
            if g.offline_enabled and (topic, 0) in owned:
                out.append((topic, g))
        return sorted(out, key=lambda x: x[0])

    def _loop(self) -> None:
        while not self._stop.wait(1.0):
            self.tick()

    def tick(self) -> None:
        """One pass of the loop (every second): recover newly owned tables, compact when due.

        A failure is retried with exponential backoff and logged once per attempt."""
        if not self._retry.due():
            return
        try:
            self.recover_new()
            if self._clock() >= self._next_compaction:
                self.compact_once()
                self._next_compaction = self._clock() + self.every_s
            self._retry.succeeded()
        except Exception as exc:  # noqa: BLE001 - the sink must keep writing; retry later
            OFFLINE_METRICS.compaction_runs.labels(outcome="failed").inc()
            delay = self._retry.failed()
            log.error("background compaction failed (retrying in %.0f s): %s", delay, exc)

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
