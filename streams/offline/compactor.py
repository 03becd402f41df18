"""Background maintenance of the offline tables a sink writes: compaction, expiry, orphans.

Any sink may compact any table (``sinks/offline/maintenance.py``): a compaction is one Iceberg
snapshot that checks its inputs are still live and conflicts like any commit, so two sinks
compacting the same table at once cannot double a row; the loser retries or drops its rewrite.
Each sink maintains the tables of the topics it has at least one partition of, which spreads
the work without an election (the old rule, "the owner of partition 0 compacts", is gone).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from schemas.backoff import Backoff
from schemas.group import FeatureGroup
from sinks.offline.catalog import OfflineTables
from sinks.offline.maintenance import (
    DEFAULT_RETENTION_S,
    DEFAULT_TARGET_BYTES,
    Hook,
    compact_table,
    expire_snapshots,
    remove_orphans,
)
from streams.consume_loop import TP
from streams.group_view import GroupView
from streams.metrics import OFFLINE_METRICS

log = logging.getLogger("featurestream.offline")
# An upload whose commit is on its way is unreferenced too: never remove a file younger than this,
# whatever the retention (a --retention of a few seconds must not delete a flush in flight).
ORPHAN_MIN_AGE_S = 900.0


class BackgroundCompactor:
    """Every ``every_s``: compacts the tables this sink writes; every ``maintain_every_s``: expires
    snapshots and removes orphans older than ``retention_s``."""

    def __init__(self, tables: OfflineTables, groups: GroupView, prefix: str, owned: Callable[[], set[TP]], *,
                 every_s: float, target_bytes: int = DEFAULT_TARGET_BYTES,
                 retention_s: float = DEFAULT_RETENTION_S, maintain_every_s: float = 3600.0,
                 storage_options: Mapping[str, Any] | None = None, hook: Hook | None = None,
                 retry_cap_s: float = 300.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.tables = tables
        self.groups = groups
        self.prefix = prefix
        self.owned = owned
        self.every_s = every_s
        self.target_bytes = target_bytes
        self.retention_s = retention_s
        self.maintain_every_s = maintain_every_s
        self.storage_options = dict(storage_options or {})
        self.hook = hook  # called after each rewrite step (tests crash the process there)
        self.runs = 0
        self._clock = clock
        # While the broker, the catalog or S3 is away every pass fails: retry after 1, 2, 4 ...
        # retry_cap_s seconds, logging once per attempt, instead of once a second.
        self._retry = Backoff(1.0, max(1.0, retry_cap_s), clock=clock)
        self._next_compaction = clock() + every_s
        self._next_maintenance = clock() + min(maintain_every_s, every_s)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="offline-compactor", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = 60.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def _written_groups(self) -> list[FeatureGroup]:
        topics = {t for t, _ in self.owned()}
        return sorted((g for g in self.groups.all().values()
                       if g.offline_enabled and g.topic(self.prefix) in topics), key=lambda g: g.name)

    def _loop(self) -> None:
        while not self._stop.wait(1.0):
            self.tick()

    def tick(self) -> None:
        """One pass of the loop (every second): compact and maintain when due. A failure is retried
        with exponential backoff and logged once per attempt."""
        if not self._retry.due():
            return
        try:
            if self._clock() >= self._next_compaction:
                self.compact_once()
                self._next_compaction = self._clock() + self.every_s
            if self._clock() >= self._next_maintenance:
                self.maintain_once()
                self._next_maintenance = self._clock() + self.maintain_every_s
            self._retry.succeeded()
        except Exception as exc:  # noqa: BLE001 - the sink must keep writing; retry later
            OFFLINE_METRICS.compaction_runs.labels(outcome="failed").inc()
            delay = self._retry.failed()
            log.error("background compaction failed (retrying in %.0f s): %s", delay, exc)

    def compact_once(self) -> int:
        """One pass over the tables this sink writes; returns the number of files merged away."""
        merged = 0
        for g in self._written_groups():
            if self._stop.is_set():
                break
            if self.tables.existing(g) is None:
                continue
            results = compact_table(lambda g=g: self.tables.table(g), target_bytes=self.target_bytes,
                                    hook=self.hook)
            n = sum(r.inputs for r in results)
            merged += n
            OFFLINE_METRICS.compaction_runs.labels(outcome="ok").inc()
            OFFLINE_METRICS.compacted_files.inc(n)
            if results:
                log.info("%s: compacted %d files into %d", g.name, n, sum(r.outputs for r in results))
        self.runs += 1
        return merged

    def maintain_once(self) -> tuple[int, int]:
        """Expire old snapshots and remove orphans of the tables this sink writes: (expired, removed)."""
        expired = removed = 0
        for g in self._written_groups():
            table = self.tables.existing(g)
            if table is None:
                continue
            expired += expire_snapshots(table, self.retention_s)
            removed += len(remove_orphans(self.tables.table(g), self.storage_options,
                                          max(self.retention_s, ORPHAN_MIN_AGE_S)))
        if expired or removed:
            log.info("maintenance: expired %d snapshots, removed %d orphan files", expired, removed)
        return expired, removed
