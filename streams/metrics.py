"""Prometheus metrics of the online processor and the offline sink.

Counters live in the process that does the work; ``streams.metrics_server.serve_metrics``
exposes them over HTTP (``/metrics``, beside ``/health`` and ``/ready``) for Prometheus, and
``featurestream status`` reads the same endpoint.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import Counter, Gauge, Histogram

from streams.freshness import FRESHNESS, FreshnessHistogram


@dataclass(frozen=True)
class OnlineMetrics:
    records: Counter
    dead_lettered: Counter
    batch_seconds: Histogram
    store_lost: Counter
    rebuilds: Counter
    rebuilding: Gauge
    rebuild_records: Gauge
    evicted_keys: Gauge


ONLINE_METRICS = OnlineMetrics(
    records=Counter("featurestream_online_records", "Records seen by the online processor, by outcome "
                    "(applied, stale, duplicate, expired, deleted, rejected, skipped)", ["group", "status"]),
    dead_lettered=Counter("featurestream_online_dead_lettered", "Poison records sent to the dead-letter topic"),
    batch_seconds=Histogram("featurestream_online_batch_seconds", "Time to apply one batch to Redis",
                            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5)),
    store_lost=Counter("featurestream_online_store_lost", "Times the online store was found without its epoch "
                       "marker (Redis lost its data, or it was never built)"),
    rebuilds=Counter("featurestream_online_rebuilds", "Online store rebuilds from Kafka, by outcome "
                     "(started, done, abandoned, failed)", ["outcome"]),
    rebuilding=Gauge("featurestream_online_rebuilding", "1 while this processor rebuilds the online store"),
    rebuild_records=Gauge("featurestream_online_rebuild_records", "Records replayed by the rebuild under way"),
    evicted_keys=Gauge("featurestream_online_redis_evicted_keys", "Redis's evicted_keys counter (INFO stats): "
                       "any growth means online records were lost"),
)


@dataclass(frozen=True)
class OfflineMetrics:
    rows_written: Counter
    files_written: Counter
    dead_lettered: Counter
    flush_seconds: Histogram
    compaction_runs: Counter
    compacted_files: Counter
    last_commit: Gauge
    uncommitted: Gauge


OFFLINE_METRICS = OfflineMetrics(
    rows_written=Counter("featurestream_offline_rows_written", "Rows made durable in the offline store",
                         ["group"]),
    files_written=Counter("featurestream_offline_files_written", "Parquet files written by the offline sink",
                          ["group"]),
    dead_lettered=Counter("featurestream_offline_dead_lettered", "Poison records the offline sink sent to the "
                          "dead-letter topic"),
    flush_seconds=Histogram("featurestream_offline_flush_seconds", "Time to write one partition's buffered "
                            "rows as durable Parquet files",
                            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)),
    compaction_runs=Counter("featurestream_offline_compaction_runs", "Background compaction passes over one "
                            "table, by outcome (ok, failed)", ["outcome"]),
    compacted_files=Counter("featurestream_offline_compacted_files", "Small files merged away by compaction"),
    # The "sink commit age" alert: time() minus this, while the offline consumer group lags.
    last_commit=Gauge("featurestream_offline_last_commit_timestamp_seconds", "Unix time of the sink's last "
                      "successful offset commit (files durable up to those offsets)"),
    uncommitted=Gauge("featurestream_offline_uncommitted_records", "Records this sink consumed and has not "
                      "committed yet: buffered for the next file, or being flushed"),
)


@dataclass(frozen=True)
class ParityMetrics:
    checked: Counter
    mismatches: Counter
    in_flight: Counter
    healed: Counter
    audits: Counter
    last_audit: Gauge


PARITY_METRICS = ParityMetrics(
    checked=Counter("featurestream_parity_checked", "Ids (online) and offsets (offline) the auditor compared "
                    "with the topic", ["store", "group"]),
    mismatches=Counter("featurestream_parity_mismatch", "Real differences between a store and the topic found by "
                       "the auditor (online: ids; offline: runs of missing, doubled or unexpected offsets, and rows "
                       "that differ)", ["store", "group"]),
    in_flight=Counter("featurestream_parity_in_flight", "Records the auditor found newer than the consumer's "
                      "committed position (online) or the table's recorded position (offline): not judged",
                      ["store", "group"]),
    healed=Counter("featurestream_parity_healed", "Online mismatches the auditor repaired, by how (key: the id's "
                   "latest version re-applied; group: the group's topic replayed)", ["group", "how"]),
    audits=Counter("featurestream_parity_audits", "Audit passes, by outcome (ok, mismatch, failed)", ["outcome"]),
    last_audit=Gauge("featurestream_parity_last_audit_timestamp_seconds", "Unix time the last audit pass ended"),
)


# featurestream_freshness_seconds{store, group}: fed by the online apply step and the offline sink
# with whole batches' bucket counts (streams/freshness.py).
FRESHNESS_METRIC: FreshnessHistogram = FRESHNESS
