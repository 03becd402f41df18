"""The continuous auditor: ``featurestream auditor`` runs :func:`run_auditor`.

Every interval it audits a sample of every group (``streams/audit.py``), counts what it checked
and found (``featurestream_parity_*``), logs each mismatch with its id and both values, and heals
online mismatches: each id's latest version is re-applied from the topic through the same
write-if-newer apply step as the processor (a version altered in place is first removed, only if it
is still that version), and past ``heal_group_above`` mismatches in one audit the group's whole
topic is replayed, as the processor's healer does after a loss it can see. Offline mismatches are
reported, not repaired: `featurestream replay GROUP --target offline` cannot refill offsets below
the table's recorded position, so a lost data file needs an operator (docs/operations.md).

It is a worker of its own, not a part of the processor or the sink: an audit that shares the
processor's code path and process shares its blind spots; its cost (reading every topic once more)
stays off the hot path; one auditor per deployment samples every group, where auditing inside
processors would need each to sample only its own partitions and to follow rebalances.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from streams.audit import Auditor, GroupFold
from streams.audit_report import GroupReport, Mismatch
from streams.audit_topics import fetch_messages
from streams.health import WorkerHealth
from streams.metrics import PARITY_METRICS
from streams.metrics_server import serve_metrics
from streams.online.applier import OnlineApplier, make_online_applier
from streams.replay import replay_topic

log = logging.getLogger("featurestream.auditor")


@dataclass(frozen=True)
class AuditorSettings:
    interval_s: float = 30.0
    sample: int = 100              # ids per group and audit
    rows: int = 20                 # offline rows compared by value per group and audit
    offline_every: int = 1         # offline check every K-th audit
    heal: bool = True
    heal_group_above: int = 20     # more online mismatches than this in one audit: replay the group


def record_report(report: GroupReport) -> None:
    """Count one group's audit in the parity metrics and log each mismatch."""
    for s in report.stores():
        PARITY_METRICS.checked.labels(store=s.store, group=report.group).inc(s.checked)
        PARITY_METRICS.in_flight.labels(store=s.store, group=report.group).inc(s.in_flight)
        PARITY_METRICS.mismatches.labels(store=s.store, group=report.group).inc(s.mismatch_count)
        for m in s.mismatches:
            log.warning("parity mismatch: %s", m.describe())


class OnlineRepair:
    """Re-applies the topic's latest version of mismatched ids, or replays a whole group."""

    def __init__(self, auditor: Auditor, applier: OnlineApplier, *, group_above: int) -> None:
        self.auditor = auditor
        self.applier = applier
        self.group_above = group_above

    def heal(self, report: GroupReport) -> None:
        if report.online is None or not report.online.mismatches:
            return
        group = self.auditor.groups.get(report.group)
        if group is None:
            return
        fold = self.auditor.fold_of(group)
        mismatches = report.online.mismatches
        if len(mismatches) > self.group_above:
            log.warning("%s: %d online mismatches in one audit: replaying the group's topic", group.name,
                        len(mismatches))
            result = replay_topic(self.auditor.bootstrap, fold.topic, self.applier, progress=False)
            PARITY_METRICS.healed.labels(group=group.name, how="group").inc(len(mismatches))
            log.warning("%s: replayed %d records to heal the online store", group.name, result.records)
            return
        self._heal_keys(fold, mismatches)

    def _heal_keys(self, fold: GroupFold, mismatches: list[Mismatch]) -> None:
        group = fold.group
        positions = {}
        for m in mismatches:
            pos = fold.position(m.record_id or "")
            if pos is not None:
                positions[m.record_id] = pos
        raws = fetch_messages(self.auditor.bootstrap, fold.topic, positions.values())
        batch = []
        for rid, pos in positions.items():
            raw = raws.get(pos)
            if raw is None:
                log.warning("%s: cannot heal record %r: its latest version %s:%s is gone from the topic",
                            group.name, rid, *pos)
                continue
            # A stored value altered in place keeps its version: write-if-newer would see a duplicate.
            self.applier.store.forget_version(group, str(rid), *pos)
            batch.append(raw)
        if batch:
            summary = self.applier(batch)
            PARITY_METRICS.healed.labels(group=group.name, how="key").inc(len(batch))
            log.warning("%s: re-applied the latest version of %d mismatched id(s) %s: %s", group.name, len(batch),
                        ", ".join(repr(r) for r in list(positions)[:20]), dict(summary.records))
        unknown = [m.record_id for m in mismatches if m.record_id not in positions]
        if unknown:
            log.warning("%s: %d id(s) have a record online and none on the topic for the online store (%s); "
                        "not deleted: check who writes these keys", group.name, len(unknown),
                        ", ".join(repr(r) for r in unknown[:20]))


def audit_once(auditor: Auditor, settings: AuditorSettings, repair: OnlineRepair | None, n: int) -> list[GroupReport]:
    """One pass: audit, count, log, heal. ``n`` numbers the pass (the offline check runs every K-th)."""
    reports = auditor.audit(sample=settings.sample, rows=settings.rows, offline=n % settings.offline_every == 0)
    for r in reports:
        record_report(r)
        if repair is not None:
            try:
                repair.heal(r)
            except Exception as exc:  # noqa: BLE001 - the next audit finds it again and retries
                log.error("%s: healing the online store failed (the next audit retries): %s", r.group, exc)
    found = sum(r.mismatch_count for r in reports)
    PARITY_METRICS.audits.labels(outcome="mismatch" if found else "ok").inc()
    PARITY_METRICS.last_audit.set(time.time())
    log.info("audit %d: %d group(s), %d mismatch(es)", n, len(reports), found)
    return reports


def run_auditor(auditor: Auditor, redis_url: str, settings: AuditorSettings | None = None, *,
                metrics_port: int | None = None, metrics_host: str = "127.0.0.1",
                on_metrics_port: Callable[[int], None] | None = None,
                until: Callable[[], bool] | None = None) -> None:
    """Audit every ``settings.interval_s`` until SIGTERM/SIGINT (or ``until()``)."""
    settings = settings or AuditorSettings()
    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
    # Ready while its passes run and succeed; it belongs to no consumer group (joined(0) at once).
    health = WorkerHealth(max_silence_s=3 * settings.interval_s + 60)
    health.joined(0)
    if metrics_port:
        server = serve_metrics(metrics_port, metrics_host, ready=health.readiness, role="auditor")
        if on_metrics_port is not None:
            on_metrics_port(server.port)
    applier = make_online_applier(auditor.bootstrap, redis_url, auditor.prefix, stage="audit-heal") \
        if settings.heal and auditor.store is not None else None
    repair = OnlineRepair(auditor, applier, group_above=settings.heal_group_above) if applier is not None else None
    n = 0
    try:
        while not stop.is_set() and not (until is not None and until()):
            started = time.monotonic()
            try:
                audit_once(auditor, settings, repair, n)
                health.recovered()
            except Exception as exc:  # noqa: BLE001 - Kafka, Redis or S3 away: try again next interval
                health.failing("its last audit pass failed")
                PARITY_METRICS.audits.labels(outcome="failed").inc()
                log.error("audit %d failed (next in %.0f s): %s: %s", n, settings.interval_s, type(exc).__name__, exc)
            n += 1
            health.beat()
            stop.wait(max(0.0, settings.interval_s - (time.monotonic() - started)))
    finally:
        auditor.close()
        if applier is not None:
            applier.store.close()
            applier.deadletters.publisher.close()

