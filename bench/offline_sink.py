"""Benchmark: the offline sink, topic → committed Apache Iceberg snapshot, against baselines in the same run.

Each phase uses its own topic prefix (so a sink already running on the stack never sees the
benchmark's topics, and the sink subprocess of (b) sees only its own), and its own Iceberg
namespace; groups, tables and files are deleted at the end.

  (a) throughput  publishes --records records of the 10-feature bench group once, then, per repeat
                  (median reported):
                  sink      the real sink code path in this process: ConsumeLoop + OfflineApplier +
                            OfflineWriter over OfflineTables (route: decode + schema check, rows →
                            Arrow, Parquet upload, one Iceberg commit per flush with the Kafka offsets
                            in the snapshot, then the consumer-group commit), fresh consumer group, fresh
                            table, sink default rotation; clock from subscribe until every offset is in a
                            committed snapshot.
                  raw       (baseline a) plain confluent-kafka consume of the same topic, JSON decode into
                            columns, one ``pa.Table`` in the table's schema, one pyiceberg ``append`` to a
                            fresh table of the same schema, partition spec and properties.
                  rawjson   (baseline c, issue 18) consume, ONE ``pyarrow.json.read_json`` of the batch
                            joined by newlines, columns to the table's schema, ONE pyiceberg ``append``.
                  pq        (baseline b) ``pq.write_table`` of the same rows (the baseline's Arrow table)
                            to the same S3 server, as many files as the sink wrote.
  (b) freshness   `featurestream sink` as a subprocess at its default settings; --fresh-rate records/s
                  for --fresh-seconds; ~--samples-per-s records a second carry their index, and a
                  reader polls ``FeatureStore.query`` until it sees each: publish-to-queryable p50/p99.
  (c) backfill    --backfill-records records with event times spread over --backfill-days days, written
                  by the real sink path (default rotation; and, with --small-max-records, again with
                  small rotations, which leaves many files); then ``count(*)`` time through
                  ``FeatureStore.query`` and the number of data files, as the sink left the table and
                  after one compaction pass (``compact_table``, 128 MB target); for the small-rotation
                  table also at a few earlier commits (time travel by commit: fewer files and rows).
                  Draws bench/out/offline_files.png: count(*) time against data files (rows labelled).

Usage (after `eval "$(featurestream up)"`; loopback only, bounded in count and time):

  .venv/bin/python bench/offline_sink.py [--records 500000] [--repeat 3] [--only throughput freshness backfill]
"""

# ruff: noqa: E402  (the sys.path fix below must run before the imports)
from __future__ import annotations

import sys
from pathlib import Path

# Benchmarks import bench._common and tests.integration.helpers: run with the repository
# root on sys.path instead of this folder.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [str(_HERE.parent)] + [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import argparse
import os
import random
import secrets
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
from confluent_kafka import Consumer, TopicPartition
from pyarrow import fs as pafs
from pyiceberg.exceptions import NoSuchNamespaceError

from bench._common import (
    customer,
    customers_group,
    load_average,
    median,
    percentile,
    process_cpu,
    service_pid,
)
from featurestream.config import ENV_TOPIC_PREFIX, Config
from featurestream.sdk import FeatureStore
from schemas.eventtime import format_iso
from schemas.group import FeatureGroup
from schemas.validate import compile_validator
from schemas.wire import encode
from sinks.offline.catalog import OfflineTables
from sinks.offline.fs import open_filesystem
from sinks.offline.maintenance import DEFAULT_TARGET_BYTES, compact_table
from sinks.offline.rotation import RotationPolicy
from sinks.offline.writer import OfflineWriter
from streams.consume_loop import ConsumeLoop, open_consumer
from streams.gc_tuning import freeze_heap
from streams.group_view import GroupView
from streams.kafka_client import FAST_DRAIN
from streams.offline.applier import OfflineApplier
from tests.integration.procs import terminate

OUT = _HERE / "out"
DAY_NS = 86_400 * 10**9
BACKFILL_T0_NS = 1_924_992_000 * 10**9  # 2031-01-01T00:00:00Z, the bench group's usual dates


# -- plumbing ------------------------------------------------------------------------------------

@dataclass
class Phase:
    """One phase's topic prefix, store and Iceberg namespace (= the prefix); removed by close()."""

    config: Config
    prefix: str
    store: FeatureStore
    roots: list[str]          # extra table locations this phase made (deleted at the end)
    namespaces: list[str]     # extra catalog namespaces this phase made (dropped at the end)

    @classmethod
    def open(cls, config: Config, kind: str) -> Phase:
        prefix = f"benchoff{os.getpid()}{kind}{secrets.token_hex(2)}"
        cfg = replace(config, topic_prefix=prefix)
        return cls(cfg, prefix, FeatureStore(cfg), [], [])

    def scratch_tables(self, tag: str) -> tuple[OfflineTables, str]:
        """A fresh namespace and location for a table of this phase's group (one per repeat: a table
        records the offsets it holds, so a second run into the same table would write nothing)."""
        ns = f"{self.prefix}_{tag}"
        root = f"{self.config.offline_uri}/{ns}"
        self.namespaces.append(ns)
        self.roots.append(root)
        return OfflineTables.open(self.config.catalog(), ns, self.config.storage_options()), root

    def close(self, groups: list[str]) -> None:
        for name in groups:
            try:
                self.store.delete_feature_group(name, purge=True)
            except Exception as exc:  # never hide the figures behind a cleanup error
                print(f"  (cleanup: could not delete group {name}: {exc})")
        try:
            catalog = OfflineTables.open(self.config.catalog(), self.prefix, self.config.storage_options()).catalog
            for ns in [*self.namespaces, self.prefix]:
                try:
                    for ident in catalog.list_tables(ns):
                        catalog.drop_table(ident)
                    catalog.drop_namespace(ns)
                except NoSuchNamespaceError:
                    continue  # never created (no table was written under it)
            for root in self.roots:
                rfs, path = open_filesystem(root, self.config.storage_options())
                if rfs.exists(path):
                    rfs.rm(path, recursive=True)
        except Exception as exc:
            print(f"  (cleanup: scratch tables: {exc})")
        self.store.close()
        self._drop_kafka_leftovers()

    def _drop_kafka_leftovers(self) -> None:
        """The prefix's internal topics (registry, dead letters) and the consumer groups this phase
        made: the prefix is unique to this run, so everything under it is ours."""
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": self.config.kafka_bootstrap, "log_level": 3})
        try:
            topics = [t for t in admin.list_topics(timeout=10).topics if t.startswith(f"{self.prefix}.")]
            if topics:
                for f in admin.delete_topics(topics, operation_timeout=30).values():
                    f.result(timeout=30)
            found = admin.list_consumer_groups(request_timeout=10).result(timeout=15).valid
            ids = [g.group_id for g in found if g.group_id.startswith(f"{self.prefix}-")]
            if ids:
                for f in admin.delete_consumer_groups(ids, request_timeout=10).values():
                    f.result(timeout=15)
        except Exception as exc:
            print(f"  (cleanup: Kafka topics/consumer groups of {self.prefix}: {exc})")


def end_offsets(config: Config, topic: str) -> dict[tuple[str, int], int]:
    c = Consumer({"bootstrap.servers": config.kafka_bootstrap, "group.id": "bench-offline-ends"})
    try:
        parts = c.list_topics(topic=topic, timeout=10).topics[topic].partitions
        return {(topic, p): c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in parts}
    finally:
        c.close()


def relocated(store: FeatureStore, root: str) -> GroupView:
    """The registry's groups with their offline location moved under ``root``."""
    def load() -> dict[str, FeatureGroup]:
        return {n: replace(g, offline_uri=f"{root}/{n}") for n, g in store.registry.refresh().items()}
    return GroupView(load)


def run_sink(phase: Phase, topic: str, ends: dict[tuple[str, int], int], tables: OfflineTables, groups: GroupView,
             policy: RotationPolicy, batch_size: int, timeout_s: float, *, freeze: bool = True,
             clock: CpuClock | None = None) -> Cpu:
    """The sink's own consume → route → write → commit loop (as ``streams/offline/worker.run_sink``
    wires it, minus dead letters, metrics and background compaction), from the beginning of
    ``topic`` until every offset is in a committed snapshot; returns what it cost (wall and CPU)."""
    clock = clock or CpuClock(phase.config)
    applier = OfflineApplier(groups, OfflineWriter(tables, policy), None, phase.prefix)
    consumer = open_consumer(phase.config.kafka_bootstrap, f"{phase.prefix}-bench-{secrets.token_hex(3)}")
    # A plain topic name is a literal subscription: only this topic is consumed.
    sink = ConsumeLoop(consumer, applier, topic, role="offline sink", batch_size=batch_size,
                       add_chunk=min(batch_size, policy.max_records))
    if freeze:
        freeze_heap()  # as the worker does once started (streams/gc_tuning.py says what it saves)
    t0 = clock.now()
    give_up = t0.wall + timeout_s
    # Consume to the end; then run()'s drain flushes every buffer, which commits it to the table:
    # the clock stops when the last snapshot is committed, not when age rotation would fire.
    sink.run(until=lambda: time.perf_counter() > give_up
             or all(sink.consumed().get(tp, -1) >= end for tp, end in ends.items()))
    cost = clock.now() - t0
    if time.perf_counter() > give_up:
        raise SystemExit(f"the sink did not consume {sum(ends.values()):,} records within {timeout_s:.0f} s")
    return cost


def table_stats(tables: OfflineTables, group: FeatureGroup) -> tuple[int, int]:
    """(rows, live data files) of the group's table at its current snapshot."""
    table = tables.existing(group)
    if table is None or table.current_snapshot() is None:
        return 0, 0
    rows = int(table.current_snapshot().summary["total-records"])
    return rows, len(list(table.scan().plan_files()))


@dataclass(frozen=True)
class Cpu:
    """Wall seconds and CPU seconds (user+system, all threads) of this process and of the local
    stack's Kafka broker and S3 server: what a stage cost the whole machine, not this process alone."""

    wall: float
    own: float
    kafka: float
    s3: float

    @property
    def total(self) -> float:
        return self.own + self.kafka + self.s3

    def __sub__(self, other: Cpu) -> Cpu:
        return Cpu(self.wall - other.wall, self.own - other.own, self.kafka - other.kafka, self.s3 - other.s3)


class CpuClock:
    """Reads :class:`Cpu` now; the broker and S3 pids come from ``featurestream up``'s run files
    (0 CPU when a service is not found, e.g. a stack not started by ``featurestream up``)."""

    def __init__(self, config: Config) -> None:
        self.kafka_pid = service_pid(config, "kafka")
        self.s3_pid = service_pid(config, "s3")

    def now(self) -> Cpu:
        t = os.times()
        return Cpu(time.perf_counter(), t.user + t.system, process_cpu(self.kafka_pid) if self.kafka_pid else 0.0,
                   process_cpu(self.s3_pid) if self.s3_pid else 0.0)

    @property
    def complete(self) -> bool:
        return bool(self.kafka_pid and self.s3_pid)


def per_row(stages: list[Cpu], rows: int) -> str:
    """One stage's median cost per row: wall µs, and CPU µs split by process."""
    def med(f: Callable[[Cpu], float]) -> float:
        return median(f(c) for c in stages) / rows * 1e6
    return (f"{med(lambda c: c.wall):.1f} µs wall, {med(lambda c: c.total):.1f} CPU-µs (this process "
            f"{med(lambda c: c.own):.1f}, Kafka {med(lambda c: c.kafka):.1f}, S3 {med(lambda c: c.s3):.1f})")


# -- (a) throughput ------------------------------------------------------------------------------

def raw_baseline(phase: Phase, topic: str, ends: dict[tuple[str, int], int], group: FeatureGroup,
                 tables: OfflineTables, timeout_s: float) -> tuple[float, pa.Table]:
    """Baseline (a): confluent-kafka consume → columns → ``pa.Table`` → one pyiceberg append.

    Same work a minimal hand-written sink must do (decode the JSON value, split the event time
    into the table's microsecond timestamp and exact nanoseconds, add the Kafka coordinates),
    without validation, dead letters, offsets in the snapshot or per-partition batching."""
    features = [f.name for f in group.features if f.name != group.event_time_name]
    c = Consumer({"bootstrap.servers": phase.config.kafka_bootstrap, "group.id": f"{phase.prefix}-raw-"
                  f"{secrets.token_hex(3)}", "enable.auto.commit": False, "auto.offset.reset": "earliest",
                  "fetch.max.bytes": 52_428_800, **FAST_DRAIN})
    loads = orjson.loads
    write_us = time.time_ns() // 1000
    started = time.perf_counter()
    give_up = started + timeout_s
    seen: dict[tuple[str, int], int] = {}
    # Created inside the clock, as the sink creates its table at its first flush.
    table = tables.table(group)
    arrow_schema = table.schema().as_arrow()
    cols: dict[str, list[Any]] = {n: [] for n in arrow_schema.names}
    c.subscribe([topic])
    try:
        while any(seen.get(tp, 0) < end for tp, end in ends.items()):
            if time.perf_counter() > give_up:
                raise SystemExit(f"the raw consumer did not reach the end of {topic} within {timeout_s:.0f} s")
            for m in c.consume(5000, timeout=0.2):
                if m.error():
                    continue
                obj = loads(m.value())
                rec = obj.get("record") or {}
                for n in features:
                    cols[n].append(rec.get(n))
                ns = obj["event_time_ns"]
                cols[group.event_time_name].append(ns // 1000)
                cols["_event_time_ns"].append(ns)
                api = dict(m.headers() or ()).get("fs-api-invocation-time")
                cols["api_invocation_time"].append(int(api) // 1000 if api else None)
                cols["write_time"].append(write_us)
                cols["is_deleted"].append(obj["op"] == "delete")
                cols["_kafka_topic"].append(m.topic())
                cols["_kafka_partition"].append(m.partition())
                cols["_kafka_offset"].append(m.offset())
                seen[(m.topic(), m.partition())] = m.offset() + 1
        rows = pa.table({n: pa.array(cols[n], type=arrow_schema.field(n).type) for n in arrow_schema.names},
                        schema=arrow_schema)
        table.append(rows)
    finally:
        c.close()
    return time.perf_counter() - started, rows


def json_rows(values: list[bytes], topics: list[str], partitions: list[int], offsets: list[int],
              group: FeatureGroup, arrow_schema: pa.Schema) -> pa.Table:
    """Baseline (c)'s conversion: one ``read_json`` of the values joined by newlines, to ``arrow_schema``."""
    import pyarrow.compute as pc
    import pyarrow.json as pj

    from schemas.batch import envelope_type

    parse = pj.ParseOptions(explicit_schema=pa.schema(list(envelope_type(group))), unexpected_field_behavior="ignore")
    buf = b"\n".join(values) + b"\n"
    parsed = pj.read_json(pa.BufferReader(buf), read_options=pj.ReadOptions(block_size=max(len(buf) + 1, 1 << 20)),
                          parse_options=parse)
    record = parsed.column("record").combine_chunks()
    ns = parsed.column("event_time_ns").combine_chunks()
    write_us = pa.scalar(time.time_ns() // 1000, pa.int64())
    cols = {}
    for f in arrow_schema:
        if f.name == group.event_time_name:
            cols[f.name] = pc.divide(ns, 1000).cast(f.type)
        elif f.name == "_event_time_ns":
            cols[f.name] = ns
        elif f.name == "api_invocation_time":
            cols[f.name] = pa.nulls(len(ns), f.type)  # a header: the hand-written sink skips it
        elif f.name == "write_time":
            cols[f.name] = pa.repeat(write_us, len(ns)).cast(f.type)
        elif f.name == "is_deleted":
            cols[f.name] = pc.equal(parsed.column("op"), "delete").combine_chunks()
        elif f.name == "_kafka_topic":
            cols[f.name] = pa.array(topics, f.type)
        elif f.name == "_kafka_partition":
            cols[f.name] = pa.array(partitions, f.type)
        elif f.name == "_kafka_offset":
            cols[f.name] = pa.array(offsets, f.type)
        else:
            cols[f.name] = record.field(f.name).cast(f.type)
    return pa.Table.from_pydict(cols, schema=arrow_schema)


def raw_json_baseline(phase: Phase, topic: str, ends: dict[tuple[str, int], int], group: FeatureGroup,
                      tables: OfflineTables, timeout_s: float, clock: CpuClock) -> dict[str, Cpu]:
    """Baseline (c), issue 18's: consume, ONE pyarrow JSON parse of the batch, ONE pyiceberg append.

    The fastest way to do the sink's job by hand: the values joined by newlines are NDJSON, parsed
    by ``pyarrow.json.read_json`` with the group's record schema (``schemas.batch.envelope_type``);
    the columns become the table's (microsecond event time, exact nanoseconds, the Kafka
    coordinates); one append. No validation, dead letters, offsets in the snapshot or batching.

    Returns what each stage cost (``consume``: from subscribe to the last value collected, the
    table's creation included; ``parse``; ``append``) and ``all``: the baseline's figure."""
    c = Consumer({"bootstrap.servers": phase.config.kafka_bootstrap, "group.id": f"{phase.prefix}-rawjson-"
                  f"{secrets.token_hex(3)}", "enable.auto.commit": False, "auto.offset.reset": "earliest",
                  "fetch.max.bytes": 52_428_800, **FAST_DRAIN})
    t0 = clock.now()
    give_up = t0.wall + timeout_s
    seen: dict[tuple[str, int], int] = {}
    table = tables.table(group)
    arrow_schema = table.schema().as_arrow()
    values: list[bytes] = []
    topics: list[str] = []
    partitions: list[int] = []
    offsets: list[int] = []
    c.subscribe([topic])
    try:
        while any(seen.get(tp, 0) < end for tp, end in ends.items()):
            if time.perf_counter() > give_up:
                raise SystemExit(f"the raw JSON consumer did not reach the end of {topic} within {timeout_s:.0f} s")
            for m in c.consume(5000, timeout=0.2):
                if m.error():
                    continue
                values.append(m.value())
                topics.append(m.topic())
                partitions.append(m.partition())
                offsets.append(m.offset())
                seen[(m.topic(), m.partition())] = m.offset() + 1
        t1 = clock.now()
        rows = json_rows(values, topics, partitions, offsets, group, arrow_schema)
        t2 = clock.now()
        table.append(rows)
        t3 = clock.now()
    finally:
        c.close()
    return {"consume": t1 - t0, "parse": t2 - t1, "append": t3 - t2, "all": t3 - t0}


def pq_baseline(config: Config, rows: pa.Table, root: str, files: int) -> float:
    """Baseline (b): ``pq.write_table`` of ``rows`` to the same S3 server, split into ``files`` files."""
    endpoint = config.s3_endpoint_url or ""
    s3 = pafs.S3FileSystem(endpoint_override=endpoint.split("://", 1)[-1], scheme=endpoint.split("://", 1)[0],
                           access_key=config.aws_access_key_id, secret_key=config.aws_secret_access_key)
    _, base = open_filesystem(root, config.storage_options())
    step = -(-rows.num_rows // max(1, files))
    started = time.perf_counter()
    for i, start in enumerate(range(0, rows.num_rows, step)):
        pq.write_table(rows.slice(start, step), f"{base}/pq-baseline/part-{i:05d}.parquet", filesystem=s3)
    return time.perf_counter() - started


def publish(store: FeatureStore, group: str, rows: Callable[[int], dict], n: int) -> float:
    started = time.perf_counter()
    chunk = 50_000
    for start in range(0, n, chunk):
        store.ingest(group, [rows(i) for i in range(start, min(n, start + chunk))], progress=False)
    return time.perf_counter() - started


def print_cpu_bound(clock: CpuClock, rows: int, sink: list[Cpu], raw_json: list[dict[str, Cpu]]) -> None:
    """The CPU bound on rows/s: what a row costs all processes together (this one, the broker, the
    S3 server), against the machine's cores. Overlapping stages in threads or processes can hide wall
    time, not CPU time, so no sink doing the same work can pass cores / CPU-per-row."""
    cores = os.cpu_count() or 1
    if not clock.complete:
        print("RESULT (a) cpu bound   not measured: the Kafka or S3 pid is unknown (start the stack with "
              "`featurestream up`)")
        return
    raw_all = median(c["all"].total for c in raw_json) / rows * 1e6
    sink_all = median(c.total for c in sink) / rows * 1e6
    print(f"RESULT (a) cpu bound   raw consume+one pyarrow JSON parse+iceberg append, per row (median of "
          f"{len(raw_json)}): consume {per_row([c['consume'] for c in raw_json], rows)}; "
          f"JSON parse {per_row([c['parse'] for c in raw_json], rows)}; "
          f"append {per_row([c['append'] for c in raw_json], rows)}")
    print(f"RESULT (a) cpu bound   raw JSON baseline {raw_all:.1f} CPU-µs/row in all processes: at most "
          f"{cores * 1e6 / raw_all:,.0f} rows/s on {cores} cores even with every stage overlapped;  "
          f"sink {per_row(sink, rows)}: at most {cores * 1e6 / sink_all:,.0f} rows/s")


def throughput(config: Config, args: argparse.Namespace) -> None:
    phase = Phase.open(config, "t")
    groups: list[str] = []
    try:
        g = phase.store.create_feature_group(customers_group("offsink", partitions=args.partitions))
        groups.append(g.name)
        topic = phase.store.registry.topic_of(g.name)
        pub_s = publish(phase.store, g.name, lambda i: customer(i % 100_000, second=i % 3600), args.records)
        ends = end_offsets(phase.config, topic)
        total = sum(ends.values())
        print(f"(a) published {total:,} records in {pub_s:.1f} s ({total / pub_s:,.0f}/s, the ingest stage); "
              f"{load_average()}", flush=True)
        policy = RotationPolicy(**{k: v for k, v in (("max_records", args.max_records),
                                                      ("max_bytes", args.max_bytes)) if v})
        clock = CpuClock(phase.config)
        sink_cost: list[Cpu] = []
        raw_s: list[float] = []
        pq_s: list[float] = []
        json_cost: list[dict[str, Cpu]] = []
        for r in range(args.repeat):
            tables, root = phase.scratch_tables(f"s{r}")
            cost = run_sink(phase, topic, ends, tables, relocated(phase.store, root), policy, args.batch_size,
                            args.timeout, freeze=args.gc_freeze, clock=clock)
            seconds = cost.wall
            rows, files = table_stats(tables, replace(g, offline_uri=f"{root}/{g.name}"))
            if rows != total:
                raise SystemExit(f"the sink's table holds {rows:,} rows, expected {total:,}")
            raw_tables, raw_root = phase.scratch_tables(f"a{r}")
            raw_g = replace(g, offline_uri=f"{raw_root}/{g.name}")
            r_s, arrow_rows = raw_baseline(phase, topic, ends, raw_g, raw_tables, args.timeout)
            raw_rows, raw_files = table_stats(raw_tables, raw_g)
            if raw_rows != total:
                raise SystemExit(f"the raw baseline's table holds {raw_rows:,} rows, expected {total:,}")
            p_s = pq_baseline(phase.config, arrow_rows, raw_root, files)
            del arrow_rows
            json_tables, json_root = phase.scratch_tables(f"j{r}")
            json_g = replace(g, offline_uri=f"{json_root}/{g.name}")
            stages = raw_json_baseline(phase, topic, ends, json_g, json_tables, args.timeout, clock)
            j_s = stages["all"].wall
            json_rows, _ = table_stats(json_tables, json_g)
            if json_rows != total:
                raise SystemExit(f"the raw JSON baseline's table holds {json_rows:,} rows, expected {total:,}")
            sink_cost.append(cost)
            raw_s.append(r_s)
            pq_s.append(p_s)
            json_cost.append(stages)
            print(f"  run {r + 1}: sink {seconds:.2f} s ({total / seconds:,.0f} rows/s, {files} data files, "
                  f"{cost.total / total * 1e6:.1f} CPU-µs/row in all processes), "
                  f"raw consume+append {r_s:.2f} s ({total / r_s:,.0f} rows/s, {raw_files} files), "
                  f"raw consume+JSON parse+append {j_s:.2f} s ({total / j_s:,.0f} rows/s, "
                  f"{stages['all'].total / total * 1e6:.1f} CPU-µs/row), "
                  f"pq.write_table {p_s:.2f} s ({total / p_s:,.0f} rows/s); {load_average()}", flush=True)
        sink_s = [c.wall for c in sink_cost]
        json_s = [c["all"].wall for c in json_cost]
        s, a, b = total / median(sink_s), total / median(raw_s), total / median(pq_s)
        j = total / median(json_s)
        ok = s >= 100_000 and s / a >= 0.5
        print(f"RESULT (a) throughput  sink {s:>10,.0f} rows/s   raw consume+pa.Table+iceberg append {a:>10,.0f} rows/s"
              f"   ratio {s / a:.2f}   (median of {args.repeat} x {total:,}; goal >= 100,000 rows/s and >= 0.5: "
              f"{'met' if ok else 'missed'})")
        print(f"RESULT (a) json baseline sink {s:>10,.0f} rows/s   raw consume+one pyarrow JSON parse+iceberg append "
              f"{j:>10,.0f} rows/s   ratio {s / j:.2f}   (median of {args.repeat} x {total:,}; issue 18 goal >= 0.5: "
              f"{'met' if s / j >= 0.5 else 'missed'})")
        print(f"RESULT (a) pq baseline pq.write_table of the same rows to the same S3 {b:>10,.0f} rows/s   "
              f"sink/pq {s / b:.3f} ({b / s:.1f}x slower)")
        print(f"RESULT (a) stages      ingest {total / pub_s:,.0f} records/s (1 run) vs sink {s:,.0f} rows/s: the sink "
              f"is {'not ' if s >= total / pub_s else ''}the slower stage")
        print_cpu_bound(clock, total, sink_cost, json_cost)
    finally:
        phase.close(groups)


# -- (b) freshness -------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class SinkProcess:
    """`featurestream sink` (default settings) in a subprocess with the phase's topic prefix."""

    def __init__(self, phase: Phase, log_dir: Path) -> None:
        self.port = free_port()
        self.log_path = log_dir / f"sink-{phase.prefix}.log"
        self._log = self.log_path.open("wb")
        env = {**os.environ, ENV_TOPIC_PREFIX: phase.prefix}
        self.proc = subprocess.Popen([sys.executable, "-m", "featurestream.cli", "sink", "--metrics-port",
                                      str(self.port), "--log-level", "warning"], env=env, stdout=self._log,
                                     stderr=subprocess.STDOUT, cwd=str(_HERE.parent))

    def wait_ready(self, timeout_s: float) -> float:
        started = time.perf_counter()
        while time.perf_counter() - started < timeout_s:
            if self.proc.poll() is not None:
                raise SystemExit(f"the sink exited with status {self.proc.returncode}; see {self.log_path}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/ready", timeout=2) as resp:
                    if resp.status == 200:
                        return time.perf_counter() - started
            except (OSError, urllib.error.HTTPError):
                pass
            time.sleep(0.2)
        raise SystemExit(f"the sink was not ready within {timeout_s:.0f} s; see {self.log_path}")

    def stop(self) -> None:
        terminate(self.proc, grace_s=60)
        self._log.close()


def freshness(config: Config, args: argparse.Namespace) -> None:
    phase = Phase.open(config, "f")
    groups: list[str] = []
    sink: SinkProcess | None = None
    try:
        g = phase.store.create_feature_group(customers_group("offfresh", partitions=args.partitions))
        groups.append(g.name)
        topic = phase.store.registry.topic_of(g.name)
        log_dir = Path(os.environ.get("TMPDIR", "/tmp"))
        sink = SinkProcess(phase, log_dir)
        ready_s = sink.wait_ready(args.timeout)
        total = int(args.fresh_rate * args.fresh_seconds)
        sample_every = max(1, int(args.fresh_rate // args.samples_per_s))
        # Validated and encoded before the clock starts, so the load generator stays light;
        # ``visits`` = the record's index, which the reader looks for.
        validator = compile_validator(g)
        encoded = []
        for k in range(total):
            rec = customer(k % 10_000, second=k % 3600)
            rec["visits"] = k
            encoded.append(encode(validator.validate(rec, api_invocation_time_ns=time.time_ns())))
        sent: dict[int, int] = {}   # sample index -> send time (ns)
        seen: set[int] = set()
        latencies: list[float] = []
        query_s: list[float] = []
        lock = threading.Lock()
        done_publishing = threading.Event()
        quote = '"' + g.name.replace('"', '""') + '"'

        def reader() -> None:
            # Bounded: the default age rotation is 50 s, so everything is committed well before this.
            give_up = time.monotonic() + args.fresh_seconds + args.fresh_wait
            while time.monotonic() < give_up:
                with lock:
                    pending = sorted(k for k in sent if k not in seen)
                if done_publishing.is_set() and not pending:
                    return
                if pending:
                    t = time.monotonic()
                    got = phase.store.query(f"SELECT visits FROM {quote} WHERE visits >= {pending[0]}")
                    now = time.time_ns()  # the poll's end: a conservative arrival time
                    query_s.append(time.monotonic() - t)
                    there = set(got.column("visits").to_pylist())
                    with lock:
                        for k in pending:
                            if k in there:
                                seen.add(k)
                                latencies.append((now - sent[k]) / 1e9)
                time.sleep(args.poll_s)

        thread = threading.Thread(target=reader, daemon=True)
        thread.start()
        futures = []
        t0 = time.perf_counter()
        for k in range(total):
            due = t0 + k / args.fresh_rate
            now = time.perf_counter()
            if due > now:
                time.sleep(max(due - now, 0.001))
            key, value, headers = encoded[k]
            stamp = time.time_ns()
            futures.append(phase.store.publisher.publish(topic, key, value, headers))
            if k % sample_every == 0:
                with lock:
                    sent[k] = stamp
        elapsed = time.perf_counter() - t0
        for f in futures:
            f.result(timeout=60)
        done_publishing.set()
        thread.join(timeout=args.fresh_seconds + args.fresh_wait + 30)
        lat = sorted(latencies)
        lost = len(sent) - len(lat)
        p50, p99 = percentile(lat, 50), percentile(lat, 99)
        print(f"(b) sink ready after {ready_s:.1f} s; {total:,} records at {total / elapsed:,.0f}/s for {elapsed:.0f} s; "
              f"reader polled every {args.poll_s} s, query p50 {percentile(sorted(query_s), 50):.2f} s; {load_average()}")
        print(f"RESULT (b) freshness   publish-to-queryable (sink defaults) at {total / elapsed:,.0f} records/s: "
              f"p50 {p50:.1f} s  p99 {p99:.1f} s  max {lat[-1] if lat else float('nan'):.1f} s over {len(lat)} samples"
              f"{f', {lost} not queryable within the wait' if lost else ''} (goal p99 <= 60 s: "
              f"{'met' if lat and p99 <= 60 and not lost else 'missed'})")
    finally:
        if sink is not None:
            sink.stop()
        phase.close(groups)


# -- (c) backfill: files and count(*) --------------------------------------------------------------

def count_star(store: FeatureStore, name: str, repeat: int = 3, as_of_commit: float | None = None
               ) -> tuple[float, int]:
    """Median seconds of ``SELECT count(*)`` through FeatureStore.query (at the snapshot current at
    ``as_of_commit``, epoch seconds, if given: time travel by commit), and its answer."""
    quote = '"' + name.replace('"', '""') + '"'
    times, n = [], -1
    for _ in range(repeat):
        t = time.perf_counter()
        got = store.query(f"SELECT count(*) AS n FROM {quote}", as_of_commit=as_of_commit)
        times.append(time.perf_counter() - t)
        n = int(got.column("n")[0].as_py())
    return median(times), n


@dataclass(frozen=True)
class Point:
    """One count(*) measurement: which table state, its data files and rows, the seconds it took."""

    series: str
    files: int
    rows: int
    seconds: float


def history_points(store: FeatureStore, tables: OfflineTables, group: FeatureGroup, how_many: int,
                   series: str) -> list[Point]:
    """count(*) at earlier snapshots of the table (time travel by commit), for the curve between
    an empty table and the current one: files and rows both grow with the snapshots."""
    table = tables.existing(group)
    if table is None or how_many <= 0:
        return []
    history = table.history()[:-1]  # the current snapshot is measured by the caller
    picks = sorted({history[round(k * (len(history) - 1) / max(1, how_many - 1))] for k in range(how_many)}
                   if history else [], key=lambda e: e.timestamp_ms)
    out = []
    for entry in picks:
        snap = table.snapshot_by_id(entry.snapshot_id)
        files = len(list(table.scan(snapshot_id=entry.snapshot_id).plan_files()))
        # The last millisecond of that commit: the snapshot current then is this one (or a later
        # one committed in the same millisecond; its file count is what we report, so re-read it).
        seconds, n = count_star(store, group.name, repeat=1, as_of_commit=(entry.timestamp_ms + 0.999) / 1000)
        rows = int(snap.summary["total-records"])
        if n != rows:
            continue  # another snapshot shares the millisecond: skip the point rather than mislabel it
        out.append(Point(series, files, rows, seconds))
    return out


def backfill(config: Config, args: argparse.Namespace) -> None:
    phase = Phase.open(config, "b")
    groups: list[str] = []
    points: list[Point] = []
    try:
        span_s = args.backfill_days * DAY_NS // 10**9

        def rows_of(seed: int) -> Callable[[int], dict]:
            rng = random.Random(seed)  # the same records for every run

            def row(i: int) -> dict:
                rec = customer(i % 20_000)
                rec["event_time"] = format_iso(BACKFILL_T0_NS + rng.randrange(span_s) * 10**9)
                return rec
            return row

        runs = [("default rotation", RotationPolicy())]
        if args.small_max_records:
            runs.append((f"rotation at {args.small_max_records:,} records",
                         RotationPolicy(max_records=args.small_max_records)))
        for label, policy in runs:
            g = phase.store.create_feature_group(customers_group(f"offfill{len(groups)}",
                                                                 partitions=args.backfill_partitions))
            groups.append(g.name)
            topic = phase.store.registry.topic_of(g.name)
            publish(phase.store, g.name, rows_of(11), args.backfill_records)
            ends = end_offsets(phase.config, topic)
            total = sum(ends.values())
            # The group's own table (namespace = the prefix, its registered location), so count(*)
            # goes through FeatureStore.query exactly as a user's would; purge deletes it.
            tables = phase.store.offline_tables()
            g = phase.store.describe_feature_group(g.name)
            sink_s = run_sink(phase, topic, ends, tables, GroupView(phase.store.registry.refresh), policy,
                              args.batch_size, args.timeout, freeze=args.gc_freeze).wall
            rows, files = table_stats(tables, g)
            before_s, n = count_star(phase.store, g.name, args.count_repeat)
            if policy != RotationPolicy():
                points += history_points(phase.store, tables, g, args.history_points, f"{label}, earlier commits")
            t = time.perf_counter()
            results = compact_table(lambda g=g, tables=tables: tables.table(g), target_bytes=DEFAULT_TARGET_BYTES)
            compact_s = time.perf_counter() - t
            _, files_after = table_stats(tables, g)
            after_s, n_after = count_star(phase.store, g.name, args.count_repeat)
            if n != total or n_after != total:
                raise SystemExit(f"count(*) said {n:,} then {n_after:,}, expected {total:,}")
            points += [Point(f"{label}, as the sink left it", files, rows, before_s),
                       Point(f"{label}, after one compaction pass", files_after, rows, after_s)]
            print(f"(c) {total:,} records over {args.backfill_days} days, {args.backfill_partitions} Kafka partitions, "
                  f"{label}: sink {sink_s:.1f} s; compaction {compact_s:.1f} s ({len(results)} rewrites); "
                  f"{load_average()}")
            # The goal is about what the sink leaves at its defaults; the small rotation shows the cost of files.
            goal = (f"goal count(*) <= 2 s: {'met' if before_s <= 2 else 'missed'}" if policy == RotationPolicy()
                    else "many small files on purpose")
            print(f"RESULT (c) backfill    {label}: as the sink left it {files:>5} data files, count(*) {before_s:6.2f} s"
                  f"   after one compaction pass {files_after:>5} files, count(*) {after_s:6.2f} s   (rows {rows:,}; "
                  f"{goal})")
        for p in points:
            if "earlier commits" in p.series:
                print(f"  count(*) at an earlier commit ({p.series}): {p.files:>5} files, {p.rows:>8,} rows, "
                      f"{p.seconds:6.2f} s")
        plot(points)
    finally:
        phase.close(groups)


def plot(points: list[Point]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    OUT.mkdir(exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    markers = iter("os^vD<>")
    for series in dict.fromkeys(p.series for p in points):
        mine = sorted((p for p in points if p.series == series), key=lambda p: p.files)
        ax.plot([p.files for p in mine], [p.seconds for p in mine], next(markers, "o"),
                linestyle="-" if len(mine) > 1 else "none", label=series)
        for p in mine:
            ax.annotate(f"{p.rows:,} rows", (p.files, p.seconds), textcoords="offset points", xytext=(4, 4),
                        fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel("data files in the Iceberg table (log)")
    ax.set_ylabel("count(*) through FeatureStore.query (s)")
    ax.set_title("Offline backfill over 28 days: count(*) time vs data files")
    ax.axhline(2.0, linestyle="--", linewidth=0.8, color="grey", label="goal: 2 s")
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = OUT / "offline_files.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print(f"  drew {path}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="+", choices=["throughput", "freshness", "backfill"],
                    default=["throughput", "freshness", "backfill"])
    ap.add_argument("--records", type=int, default=500_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--partitions", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=5000, help="consume batch (the sink's default)")
    ap.add_argument("--max-records", type=int, default=0, help="sink rotation in records (0: the sink's default)")
    ap.add_argument("--max-bytes", type=int, default=0, help="sink rotation in bytes (0: the sink's default)")
    ap.add_argument("--fresh-rate", type=float, default=500.0)
    ap.add_argument("--fresh-seconds", type=float, default=30.0)
    ap.add_argument("--samples-per-s", type=float, default=5.0)
    ap.add_argument("--poll-s", type=float, default=0.5, help="the freshness reader's pause between queries")
    ap.add_argument("--fresh-wait", type=float, default=120.0, help="how long after publishing to wait for rows")
    ap.add_argument("--backfill-records", type=int, default=120_000)
    ap.add_argument("--backfill-days", type=int, default=28)
    ap.add_argument("--backfill-partitions", type=int, default=6)
    ap.add_argument("--small-max-records", type=int, default=2000,
                    help="also backfill with this rotation, for many small files (0: skip)")
    ap.add_argument("--history-points", type=int, default=4,
                    help="count(*) at this many earlier commits of the small-rotation table (time travel)")
    ap.add_argument("--count-repeat", type=int, default=3, help="count(*) timings per table state (median)")
    ap.add_argument("--timeout", type=float, default=600.0, help="bound on each consume-to-the-end")
    ap.add_argument("--no-gc-freeze", dest="gc_freeze", action="store_false",
                    help="do not freeze the heap before the sink runs, as the worker did before 2026-12-04 "
                         "(measures what streams.gc_tuning.freeze_heap saves)")
    args = ap.parse_args()
    config = Config.from_env()
    config.require("kafka_bootstrap")
    offline = config.require("offline_uri")
    if not offline.startswith("s3://"):
        sys.exit("bench/offline_sink.py measures the S3 server: FEATURESTREAM_OFFLINE_URI must be s3://...")
    print(f"offline sink benchmark: {', '.join(args.only)}; catalog {config.catalog().split('://', 1)[0]}; "
          f"heap {'frozen' if args.gc_freeze else 'NOT frozen'} before the sink; {load_average()}", flush=True)
    if "throughput" in args.only:
        throughput(config, args)
    if "freshness" in args.only:
        freshness(config, args)
    if "backfill" in args.only:
        backfill(config, args)


if __name__ == "__main__":
    main()
