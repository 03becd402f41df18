"""Benchmark: the offline sink, topic → durable Parquet on the S3 server, vs raw pyarrow.

Publishes N records of the 10-feature bench group once, then, per repeat (median reported):

  sink      a fresh consumer group runs the real sink loop (SinkConsumer + OfflineApplier +
            OfflineWriter: decode, validate, rows → Arrow, Parquet, atomic PUT, synchronous
            commit) from the earliest offset until every offset is committed; rows/s.
  baseline  raw pyarrow writing the same rows, already an Arrow table, as Parquet to the same
            S3 server (pyarrow.fs.S3FileSystem), split into as many files as the sink wrote.

Then files per hour partition and bytes per file, before and after compact_table (target
128 MB). Usage (after `eval "$(featurestream up)"`):

  .venv/bin/python bench/offline_sink.py [--records 500000] [--repeat 3] [--max-records 100000]
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import sys
import time
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

# Benchmarks import bench._common and tests.integration.helpers: run with the repository
# root on sys.path instead of this folder.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
from pyarrow import fs as pafs  # noqa: E402

from bench._common import customer, customers_group, load_average, median, unique_name  # noqa: E402
from featurestream.config import Config  # noqa: E402
from featurestream.sdk import FeatureStore  # noqa: E402
from sinks.offline import layout  # noqa: E402
from sinks.offline.catalog import list_live_files, read_live_table  # noqa: E402
from sinks.offline.compaction import compact_table  # noqa: E402
from sinks.offline.fs import open_filesystem  # noqa: E402
from sinks.offline.rotation import RotationPolicy  # noqa: E402
from sinks.offline.writer import OfflineWriter, table_path_for  # noqa: E402
from streams.group_view import GroupView  # noqa: E402
from streams.lag import committed_offsets  # noqa: E402
from streams.offline.applier import OfflineApplier  # noqa: E402
from streams.offline.consumer import SinkConsumer, open_consumer  # noqa: E402


def publish(store: FeatureStore, group: str, n: int) -> float:
    started = time.perf_counter()
    chunk = 50_000
    for start in range(0, n, chunk):
        rows = [customer(i % 100_000, second=i % 3600) for i in range(start, min(n, start + chunk))]
        store.ingest(group, rows, progress=False)
    return time.perf_counter() - started


def ends_of(store: FeatureStore, topic: str) -> dict[tuple[str, int], int]:
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": store.config.kafka_bootstrap, "group.id": "bench-ends"})
    try:
        parts = c.list_topics(topic=topic, timeout=10).topics[topic].partitions
        return {(topic, p): c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in parts}
    finally:
        c.close()


def run_sink_once(config: Config, store: FeatureStore, topic: str, root_uri: str, policy: RotationPolicy,
                  ends: dict) -> tuple[float, str]:
    fs, root = open_filesystem(root_uri, config.storage_options())
    # Each repeat writes its own table under ``root`` (not the group's registered location),
    # so runs do not overwrite each other's files.
    groups = GroupView(lambda: {n: replace(g, offline_uri=None) for n, g in store.registry.refresh().items()})

    applier = OfflineApplier(groups, OfflineWriter(fs, root, policy), None, config.topic_prefix)
    group_id = f"bench-offline-{secrets.token_hex(4)}"
    consumer = open_consumer(config.kafka_bootstrap, group_id)
    sink = SinkConsumer(consumer, applier, topic, add_chunk=min(1000, policy.max_records))
    started = time.perf_counter()
    # Consume to the end, then run()'s drain flushes and commits the rest: the clock stops when
    # every offset is committed (not when the age rotation would have fired).
    sink.run(until=lambda: all(sink.consumed().get(tp, -1) >= end for tp, end in ends.items()))
    seconds = time.perf_counter() - started
    committed = committed_offsets(config.kafka_bootstrap, group_id, [topic])
    assert all(committed.get(tp, -1) >= end for tp, end in ends.items()), f"not all committed: {committed}"
    g = replace(store.describe_feature_group(topic.split(".", 1)[1]), offline_uri=None)
    return seconds, table_path_for(fs, root, g)


def baseline_once(config: Config, table: pa.Table, root: str, files: int) -> float:
    endpoint = config.s3_endpoint_url or ""
    s3 = pafs.S3FileSystem(endpoint_override=endpoint.split("://", 1)[-1], scheme=endpoint.split("://", 1)[0],
                           access_key=config.aws_access_key_id, secret_key=config.aws_secret_access_key)
    step = -(-table.num_rows // max(1, files))
    started = time.perf_counter()
    for i, start in enumerate(range(0, table.num_rows, step)):
        pq.write_table(table.slice(start, step), f"{root}/part-{i:05d}.parquet", filesystem=s3)
    return time.perf_counter() - started


def layout_stats(fs, table: str) -> tuple[float, float, int]:
    """(median files per hour partition, median bytes per file, live files)."""
    per_hour: dict[str, int] = defaultdict(int)
    sizes = []
    files = list_live_files(fs, table)
    for p in files:
        per_hour[layout.hour_partition_of(p)] += 1
        sizes.append(fs.size(p))
    return statistics.median(per_hour.values()), statistics.median(sizes), len(files)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=500_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--partitions", type=int, default=3)
    ap.add_argument("--max-records", type=int, default=100_000, help="sink rotation (records per file)")
    ap.add_argument("--max-age-s", type=float, default=60.0)
    args = ap.parse_args()
    config = Config.from_env()
    config.require("kafka_bootstrap")
    offline = config.require("offline_uri")
    if not offline.startswith("s3://"):
        sys.exit("bench/offline_sink.py measures the S3 server: FEATURESTREAM_OFFLINE_URI must be s3://...")
    policy = RotationPolicy(max_records=args.max_records, max_age_s=args.max_age_s)
    print(f"offline sink benchmark: {args.records} records, {args.partitions} partitions, rotation "
          f"{args.max_records} records/{args.max_age_s:.0f} s, {load_average()}")
    with FeatureStore(config) as store:
        g = store.create_feature_group(customers_group(unique_name("offsink"), partitions=args.partitions))
        topic = store.registry.topic_of(g.name)
        try:
            pub_s = publish(store, g.name, args.records)
            ends = ends_of(store, topic)
            total = sum(ends.values())
            print(f"published {total} records in {pub_s:.1f} s ({total / pub_s:,.0f}/s)")
            sink_s, base_s = [], []
            fs = table = None
            roots = []
            for r in range(args.repeat):
                root_uri = f"{offline}/bench-{secrets.token_hex(4)}"
                roots.append(root_uri)
                seconds, table = run_sink_once(config, store, topic, root_uri, policy, ends)
                fs, _ = open_filesystem(root_uri, config.storage_options())
                rows = read_live_table(fs, table)
                assert rows.num_rows == total, f"sink wrote {rows.num_rows} rows, expected {total}"
                n_files = len(list_live_files(fs, table))
                bucket_root = fs._strip_protocol(root_uri)
                b = baseline_once(config, rows, f"{bucket_root}/baseline", n_files)
                sink_s.append(seconds)
                base_s.append(b)
                print(f"  run {r + 1}: sink {seconds:.2f} s ({total / seconds:,.0f} rows/s, {n_files} files), "
                      f"raw pyarrow {b:.2f} s ({total / b:,.0f} rows/s)")
            s, b = median(sink_s), median(base_s)
            print(f"sink      {total / s:>12,.0f} rows/s   (median of {args.repeat}, topic → durable Parquet, "
                  "committed)")
            print(f"raw arrow {total / b:>12,.0f} rows/s   (the same rows as an Arrow table → Parquet, same "
                  "server)")
            print(f"ratio     {s / b:>12.1f}x slower than raw pyarrow writing")
            assert fs is not None and table is not None
            fph, bpf, n = layout_stats(fs, table)
            print(f"before compaction: {fph:.0f} files per hour partition, {bpf / 1e6:.2f} MB per file ({n} files)")
            started = time.perf_counter()
            compact_table(fs, table, ends)
            c_s = time.perf_counter() - started
            fph, bpf, n = layout_stats(fs, table)
            print(f"after compaction:  {fph:.0f} files per hour partition, {bpf / 1e6:.2f} MB per file ({n} files; "
                  f"compaction took {c_s:.1f} s)")
        finally:
            store.delete_feature_group(g.name)
            for root_uri in locals().get("roots", []):
                rfs, rroot = open_filesystem(root_uri, config.storage_options())
                if rfs.exists(rroot):
                    rfs.rm(rroot, recursive=True)


if __name__ == "__main__":
    main()
