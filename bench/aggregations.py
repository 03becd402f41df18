"""Benchmark: aggregation groups (issue 21), each figure against a baseline from the same run.

  (a) live      a source event stream at a steady --rate events/s for --steady-seconds, through
                `featurestream process` (a subprocess, own topic prefix): once into an aggregation
                group of 3 windows x 5 functions over one feature (`amount:sum,count,mean,min,max@10m,1h,1d`),
                once into the latest-value path (the same events, the source's online store, no
                aggregation). A probe thread publishes one event for a fresh key every 20 ms and
                polls until it is readable: event-to-readable p50/p99. CPU-µs per event: the
                processor's CPU (its apply process included) over the steady load / events.
                (The load generator validates records in this process: it shares the 2 cores.)
  (b) memory    Redis bytes per key (MEMORY USAGE) for `amount:sum,count,mean,min,max@1h,7d,90d`
                after --days of events at one per key per minute (simulated event times, folded in
                process through the fold script), and the tile layout that bounds it.
  (c) reads     get_record of those 15 aggregates (windows up to 90 days), in process, p50/p99,
                against raw HGETALL of a hash with 15 fields.
  (d) backfill  --backfill-events events already in a topic: a new aggregation group (the (b)
                definition) filled by replay, events/s, against replaying the same topic into the
                latest-value path.
  (e) pit       point-in-time aggregates: OfflineQuery.get_historical_features (what the SDK calls)
                of an aggregation group `amount:sum,count,max@1h,1d,7d` + `qty:sum,max@1h,1d,7d`
                (15 aggregates) for --pit-rows entity rows (read at 00:00 UTC, so every window is
                exactly (T - w, T]) over --pit-events events of a source group in an Iceberg table
                in the production schema (local SQLite catalog and warehouse under --pit-dir, one
                pyiceberg append of the rows the sink writes: Kafka partition/offset, 30 days of
                event times, slightly out of order but none beyond the lateness), against a
                hand-written DuckDB range join over the same data files; both answers must be equal
                (integers, counts, maxima exactly; float sums within 1e-12 relative). Median of
                --repeat. Needs no services.

  eval "$(.venv/bin/featurestream up)"
  .venv/bin/python bench/aggregations.py            # full sizes (minutes; the machine to itself)
  .venv/bin/python bench/aggregations.py --quick    # tiny sizes, a check that it runs
  .venv/bin/python bench/aggregations.py --only pit [--pit-rows 1000000 --pit-events 10000000 --repeat 3]
"""

# ruff: noqa: E402  (the sys.path fix below must run before the imports)
from __future__ import annotations

import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:] = [str(_HERE.parent)] + [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import argparse
import os
import random
import tempfile
import threading
import time
from dataclasses import replace
from typing import Any

import redis

from bench._common import broker_pid, load_average, percentile, process_cpu, unique_name
from bench.online import Processor
from featurestream.config import Config
from featurestream.sdk import FeatureStore
from schemas.aggregation import AggregationSpec, parse_aggregates
from schemas.aggregation_group import aggregation_group
from schemas.eventtime import format_iso
from schemas.group import FeatureGroup
from schemas.messages import PutMessage
from schemas.types import FeatureDefinition as F
from sinks.online.aggregates import AggregateStore

LIVE_FEATURES = ["amount:sum,count,mean,min,max@10m,1h,1d"]
READ_FEATURES = ["amount:sum,count,mean,min,max@1h,7d,90d"]
MIN_NS = 60 * 10**9


def source_group(name: str, *, online: bool) -> FeatureGroup:
    """The source group; without its online store (the aggregation runs) it has the offline store, as a
    group needs one of them (no sink runs here: its table stays empty)."""
    return FeatureGroup(name, "txn_id", "event_time",
                        (F("txn_id", "String"), F("event_time", "String"), F("card_id", "String"),
                         F("amount", "Fractional")), online_enabled=online, offline_enabled=not online, partitions=3)


def _store(config: Config, prefix: str) -> FeatureStore:
    return FeatureStore(replace(config, topic_prefix=prefix))


# -- (a) live -------------------------------------------------------------------------------------

def live_run(config: Config, args: argparse.Namespace, log_dir: Path, *, aggregate: bool) -> tuple[list[float], float]:
    """(event-to-readable latencies in ms, processor CPU-µs per event) for one path."""
    prefix = unique_name("agg-live" if aggregate else "lv-live")
    fs = _store(config, prefix)
    src = fs.create_feature_group(source_group("tx", online=not aggregate))
    agg = fs.create_aggregation_group("tx-stats", src.name, "card_id", LIVE_FEATURES, backfill=False) \
        if aggregate else None
    proc = Processor(prefix, 1000, log_dir)
    rng = random.Random(1)
    latencies: list[float] = []
    stop = threading.Event()

    def readable(card: str, txn: str) -> bool:
        if agg is not None:
            got = fs.online.get_record(agg, card, ["amount_count_1d"])
            return bool(got and got.get("amount_count_1d"))
        return fs.get_record(src.name, txn) is not None

    def probe() -> None:
        i = 0
        while not stop.is_set():
            i += 1
            card, txn = f"probe-{i}", f"p{i}"
            sent = time.perf_counter()
            fs.put_record(src.name, {"txn_id": txn, "event_time": format_iso(time.time_ns()), "card_id": card,
                                     "amount": 1.5})
            while not readable(card, txn):
                if time.perf_counter() - sent > 30:
                    raise RuntimeError(f"probe event {txn} not readable after 30 s; see {proc.log_path}")
            latencies.append((time.perf_counter() - sent) * 1000)
            stop.wait(0.02)

    try:
        # Warm up: the processor up and holding the topic.
        fs.put_record(src.name, {"txn_id": "w", "event_time": format_iso(time.time_ns()), "card_id": "warm",
                                 "amount": 1.0})
        deadline = time.monotonic() + args.timeout
        while not readable("warm", "w"):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the processor did not start; see {proc.log_path}")
            time.sleep(0.05)
        cpu0 = sum(process_cpu(p) for p in proc.pids())
        prober = threading.Thread(target=probe, daemon=True)
        prober.start()
        sent, started = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - started) < args.steady_seconds:
            due = int(elapsed * args.rate)
            for _ in range(due - sent):
                sent += 1
                fs.put_record_async(src.name, {"txn_id": f"t{sent}", "event_time": format_iso(time.time_ns()),
                                               "card_id": f"card-{rng.randrange(args.keys)}",
                                               "amount": round(rng.uniform(0, 500), 2)})
            time.sleep(0.005)
        fs.publisher.flush()
        stop.set()
        prober.join(60)
        # CPU over the steady load, once the processor has caught up (its counter reaches every event).
        group = agg.name if agg is not None else src.name
        while (proc.records_seen(group) or 0) < sent + len(latencies):
            if time.monotonic() > deadline + args.steady_seconds:
                break
            time.sleep(0.1)
        cpu = sum(process_cpu(p) for p in proc.pids()) - cpu0
        return latencies, cpu / max(1, sent + len(latencies)) * 1e6
    finally:
        stop.set()
        proc.stop()
        for name in ([agg.name] if agg is not None else []) + [src.name]:
            try:
                fs.delete_feature_group(name, purge=True)
            except Exception:  # noqa: BLE001 - cleanup
                pass
        fs.close()


# -- (b) memory and (c) reads -------------------------------------------------------------------------

def read_group(name: str) -> FeatureGroup:
    spec = AggregationSpec("bench-src", "card_id", parse_aggregates(READ_FEATURES, group=name), 7 * 86400 * 10**9)
    return replace(aggregation_group(name, spec, source_group("bench-src", online=False)), creation_time=time.time())


def memory_and_reads(config: Config, args: argparse.Namespace, client: Any) -> None:
    prefix = unique_name("agg-mem")
    group = read_group("stats")
    store = AggregateStore(client, prefix)
    end = time.time_ns() // MIN_NS * MIN_NS
    minutes = int(args.days * 1440)
    rng = random.Random(2)
    started = time.perf_counter()
    for k in range(args.memory_keys):
        card = f"card-{k}"
        items = []
        for i in range(minutes):
            et = end - (minutes - i) * MIN_NS
            items.append((PutMessage(f"{card}-{i}", et, {"txn_id": f"{card}-{i}", "event_time": format_iso(et),
                                                          "card_id": card, "amount": round(rng.uniform(0, 500), 2)}),
                          0, i))
            if len(items) == 2000:
                store.fold(group, items)
                items = []
        if items:
            store.fold(group, items)
    fold_s = time.perf_counter() - started
    keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
    total = sum(client.memory_usage(k, samples=0) or 0 for k in keys)
    hashes = [k for k in keys if client.type(k) in (b"hash", "hash")]
    fields = sum(client.hlen(k) for k in hashes) / max(1, len(hashes))
    plan = store.plan(group)
    print(f"RESULT (b) memory      {total / args.memory_keys:,.0f} bytes per key ({len(keys)} Redis keys for "
          f"{args.memory_keys} aggregation keys, {fields:.0f} hash fields each) after {args.days:g} days at one "
          f"event/key/minute ({minutes:,} events per key; folded in process at "
          f"{minutes * args.memory_keys / fold_s:,.0f} events/s)")
    print(f"           tile layout: levels {[lv.value for lv in plan.levels]}; states "
          f"{[(s.kind, s.feature) for s in plan.states]}; a read of a window merges a bounded number of tiles per level")

    # (c) reads at the end of the simulated time, against HGETALL of 15 fields.
    names = [a.output_name for a in group.aggregation.aggregates]  # type: ignore[union-attr]
    raw_key = f"{prefix}-raw"
    client.hset(raw_key, mapping={n: "123.456" for n in names})
    cards = [f"card-{k}" for k in range(args.memory_keys)]
    ours, raw = [], []
    for i in range(args.reads):
        card = cards[i % len(cards)]
        t0 = time.perf_counter()
        got = store.get_records(group, [card], None, now_ns=end)[0]
        t1 = time.perf_counter()
        client.hgetall(raw_key)
        t2 = time.perf_counter()
        assert got is not None and len([n for n in names if n in got]) == 15, got
        ours.append((t1 - t0) * 1e6)
        raw.append((t2 - t1) * 1e6)
    ours.sort()
    raw.sort()
    print(f"RESULT (c) reads       get_record of 15 aggregates (windows up to 90d) p50 {percentile(ours, 50):.0f} µs "
          f"p99 {percentile(ours, 99):.0f} µs   raw HGETALL of 15 fields p50 {percentile(raw, 50):.0f} µs "
          f"p99 {percentile(raw, 99):.0f} µs   ({args.reads} reads each)")
    store.wipe_group(group)
    client.delete(raw_key)


# -- (d) backfill ---------------------------------------------------------------------------------

def backfill(config: Config, args: argparse.Namespace) -> None:
    from streams.replay import replay_online

    prefix = unique_name("agg-fill")
    fs = _store(config, prefix)
    src = fs.create_feature_group(source_group("tx", online=True))
    rng = random.Random(3)
    base = time.time_ns() - 80 * 86400 * 10**9
    for i in range(args.backfill_events):
        et = base + i * (80 * 86400 * 10**9 // max(1, args.backfill_events))
        fs.put_record_async(src.name, {"txn_id": f"t{i}", "event_time": format_iso(et),
                                       "card_id": f"card-{rng.randrange(args.keys)}",
                                       "amount": round(rng.uniform(0, 500), 2)})
    fs.publisher.flush()
    agg = fs.create_aggregation_group("tx-stats", src.name, "card_id", READ_FEATURES, backfill=False)
    client = redis.Redis.from_url(config.require("redis_url"))
    kpid = broker_pid(config.state_dir)

    def cpu() -> tuple[float, float, float]:
        """CPU seconds so far: this process (the replay, all threads), Redis, the Kafka broker."""
        info = client.info("cpu")
        return (process_cpu(os.getpid()), info["used_cpu_user"] + info["used_cpu_sys"],
                process_cpu(kpid) if kpid else 0.0)

    def replay(group: FeatureGroup) -> tuple[Any, str]:
        before = cpu()
        done = replay_online(cfg.kafka(), cfg.require("redis_url"), prefix, group, progress=False)
        used = [(b - a) * 1e6 / max(1, done.records) for a, b in zip(before, cpu(), strict=True)]
        split = (f"CPU-µs per event: replay {used[0]:.1f}, Redis {used[1]:.1f}, Kafka "
                 f"{used[2]:.1f}{'' if kpid else ' (broker pid unknown)'}, total {sum(used):.1f}: "
                 f"{2e6 / sum(used):,.0f} events/s if all of it ran on this machine's 2 cores")
        return done, split

    try:
        cfg = fs.config
        ours, ours_cpu = replay(agg)
        base_run, base_cpu = replay(src)
        print(f"RESULT (d) backfill    {ours.records:,} events into a new aggregation group (15 aggregates) "
              f"{ours.records / ours.seconds:,.0f} events/s ({ours.seconds:.1f} s)   replay of the same topic "
              f"into the latest-value path {base_run.records / base_run.seconds:,.0f} events/s")
        print(f"           (d) aggregation group: {ours_cpu}")
        print(f"           (d) latest-value path: {base_cpu}")
    finally:
        client.close()
        for name in (agg.name, src.name):
            try:
                fs.delete_feature_group(name, purge=True)
            except Exception:  # noqa: BLE001 - cleanup
                pass
        fs.close()


# -- (e) point in time ------------------------------------------------------------------------------

# 3 windows x 5 functions (sum, count, max of a Fractional; sum, max of an Integral): 15 aggregates. The 7d window slides by the day
# (schemas/tiles.py), so the entity rows read at whole days (00:00 UTC): there every window's tile
# semantics are exactly (T - w, T], which the hand-written query computes.
PIT_FEATURES = ["amount:sum,count,max@1h,1d,7d", "qty:sum,max@1h,1d,7d"]
PIT_SPAN_DAYS = 30
PIT_T0 = 1_633_046_400 * 10**9  # 2021-10-01T00:00:00Z
PIT_PARTITIONS = 3
HOUR_NS = 3600 * 10**9
DAY_NS = 86400 * 10**9


def pit_groups(root: Path) -> tuple[FeatureGroup, FeatureGroup]:
    """The source group (its offline table under ``root``) and the aggregation group over it; fixed
    creation times (the aggregation group created after its source, as the registry requires)."""
    src = FeatureGroup("tx", "txn_id", "event_time",
                       (F("txn_id", "String"), F("event_time", "String"), F("card_id", "String"),
                        F("amount", "Fractional"), F("qty", "Integral")),
                       online_enabled=False, offline_enabled=True, partitions=PIT_PARTITIONS,
                       creation_time=1_700_000_000.0, offline_uri=str(root / "tx"))
    spec = AggregationSpec("tx", "card_id", parse_aggregates(PIT_FEATURES, group="tx-stats"))
    return src, replace(aggregation_group("tx-stats", spec, src), creation_time=1_700_000_001.0)


def pit_events(tables: Any, src: FeatureGroup, n: int, cards: int, lateness_ns: int, seed: int) -> None:
    """Fill the source's Iceberg table with one append of ``n`` events as the sink writes them.

    Event times (whole microseconds) uniform over PIT_SPAN_DAYS days, 1% of them on a whole hour
    (on window bounds); 2% of amounts null. Each card lives in one of PIT_PARTITIONS Kafka
    partitions (a hash of the key stands for the publisher's), and a partition's offsets follow the
    arrival order: the event time plus a delay of up to 10 minutes, so events arrive out of order
    but never more than the allowed lateness behind an earlier offset of their key (no event is
    dead-lettered; the hand-written query needs no lateness rule). No deletes."""
    import numpy as np
    import pyarrow as pa

    from schemas.ddl import offline_arrow_schema
    from sinks.offline.table_format import to_table_rows

    delay_max = 10 * MIN_NS
    assert delay_max < lateness_ns  # et' + d' <= et + d  =>  et' - et < delay_max < lateness: none late
    rng = np.random.default_rng(seed)
    card = rng.integers(0, cards, n)
    et = PIT_T0 + rng.integers(0, PIT_SPAN_DAYS * DAY_NS // 1000, n) * 1000
    on_hour = rng.random(n) < 0.01  # some exactly on a window bound: (T - w, T] keeps T, drops T - w
    et[on_hour] = et[on_hour] // HOUR_NS * HOUR_NS
    arrival = et + rng.integers(0, delay_max, n)
    part = (card * 2654435761 % PIT_PARTITIONS).astype(np.int32)
    order = np.lexsort((arrival, part))
    offsets = np.empty(n, np.int64)
    sorted_part = part[order]
    starts = np.searchsorted(sorted_part, np.arange(PIT_PARTITIONS))
    offsets[order] = np.arange(n) - starts[sorted_part]
    ts = pa.timestamp("ns", "UTC")
    schema = offline_arrow_schema(src)
    rows = pa.table({
        "txn_id": texts("t-", np.arange(n)), "event_time": pa.array(et).cast(ts),
        "card_id": texts("card-", card),
        "amount": pa.array(rng.integers(0, 50_000, n) / 100, mask=rng.random(n) < 0.02),
        "qty": pa.array(rng.integers(-5, 1000, n)),
        "api_invocation_time": pa.array(arrival).cast(ts), "write_time": pa.array(arrival).cast(ts),
        "is_deleted": pa.array(np.zeros(n, bool)), "_kafka_topic": pa.array(["tx"] * n, pa.string()),
        "_kafka_partition": pa.array(part), "_kafka_offset": pa.array(offsets),
    }).select(schema.names).cast(schema)
    # In arrival order, as the sink writes a live stream (row groups cover narrow time ranges).
    rows = rows.take(np.argsort(arrival, kind="stable"))
    tables.table(src).append(to_table_rows(rows, "event_time"))


def texts(prefix: str, ix: Any) -> Any:
    """``prefix<i>`` for each integer i of ``ix``, as an Arrow string array."""
    import pyarrow as pa
    import pyarrow.compute as pc

    return pc.binary_join_element_wise(prefix, pa.array(ix).cast(pa.string()), "")


def pit_entities(n: int, cards: int, seed: int) -> Any:
    """``n`` entity rows: a card (~5% with no events) and a read time at 00:00 UTC of a day from the
    first day of events to one day after the last."""
    import numpy as np
    import pyarrow as pa

    rng = np.random.default_rng(seed)
    ts = PIT_T0 + rng.integers(0, PIT_SPAN_DAYS + 2, n) * DAY_NS
    return pa.table({"card_id": texts("card-", rng.integers(0, int(cards * 1.05) + 1, n)),
                     "event_time": pa.array(ts).cast(pa.timestamp("ns", "UTC"))})


def pit_hand_sql(agg: FeatureGroup, files: str) -> str:
    """The query people would write: a range join of each entity row with its card's events of the
    widest window, each aggregate a FILTERed sum/count/max over ``(T - w, T]``. ``files``: the data
    files of the source table's snapshot (a DuckDB list literal); ``ent`` has ``rn, card_id, t``."""
    from sinks.offline.table_format import EVENT_TIME_NS

    spec = agg.aggregation
    assert spec is not None
    widest = max(a.window_ns for a in spec.aggregates)  # type: ignore[type-var]
    cols = []
    for a in spec.aggregates:
        inside = f"FILTER (WHERE x.et > e.t - {a.window_ns})"
        fn = a.function.value
        if fn == "count":
            cols.append(f"count(x.{a.feature}) {inside}")
        elif fn == "max":
            cols.append(f"max(x.{a.feature}) {inside}")
        elif fn == "sum":  # an empty window sums to 0, as the online read answers
            cast = "BIGINT" if spec.types[a.feature] == "Integral" else "DOUBLE"
            cols.append(f"CAST(coalesce(sum(x.{a.feature}) {inside}, 0) AS {cast})")
        else:
            raise ValueError(f"the hand-written query has no {fn!r}")
        cols[-1] += f" AS {a.output_name}"
    feats = ", ".join(dict.fromkeys(a.feature for a in spec.aggregates))
    return (f"WITH x AS (SELECT card_id, {EVENT_TIME_NS} AS et, {feats} FROM read_parquet({files}) "
            f"WHERE NOT is_deleted)\n"
            f"SELECT e.rn, {', '.join(cols)}\nFROM ent e LEFT JOIN x ON x.card_id = e.card_id AND x.et <= e.t "
            f"AND x.et > e.t - {widest}\nGROUP BY e.rn ORDER BY e.rn")


def pit_differences(agg: FeatureGroup, ours: Any, hand: Any) -> list[str]:
    """Where the two answers differ (at most 5 examples): integers, counts and maxima exactly, float
    sums within 1e-12 relative (DuckDB's sum(DOUBLE) is not correctly rounded; ours is)."""
    spec = agg.aggregation
    assert spec is not None
    out: list[str] = []
    for a in spec.aggregates:
        mine, theirs = ours.column(a.output_name).to_pylist(), hand.column(a.output_name).to_pylist()
        loose = a.function.value == "sum" and spec.types[a.feature] == "Fractional"
        for r, (x, y) in enumerate(zip(mine, theirs, strict=True)):
            same = x == y if not loose or x is None or y is None else abs(x - y) <= 1e-12 * max(abs(x), abs(y))
            if not same and len(out) < 5:
                out.append(f"row {r} {a.output_name}: ours {x!r} hand-written {y!r}")
    return out


def pit(args: argparse.Namespace) -> None:
    """(e): get_historical_features of an aggregation group's features against a hand-written DuckDB
    range join over the same data files, both on an Iceberg table built here (no services)."""
    import shutil
    import statistics

    import pyarrow as pa

    from bench.offline_pit import file_list
    from sinks.offline.catalog import OfflineTables
    from sinks.offline.query import OfflineQuery

    root = Path(args.pit_dir)
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    try:
        tables = OfflineTables.open(f"sqlite:///{root / 'catalog.db'}", "benchpitagg")
        src, agg = pit_groups(root)
        assert agg.aggregation is not None
        cards = max(1, args.pit_events // 100)
        started = time.perf_counter()
        pit_events(tables, src, args.pit_events, cards, agg.aggregation.lateness_ns, seed=21)
        ent = pit_entities(args.pit_rows, cards, seed=22)
        built = time.perf_counter() - started
        q = OfflineQuery([src], tables=tables, aggregations=[agg])
        features = [f"{agg.name}:*"]
        times: list[float] = []
        ours = None
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            ours = q.get_historical_features(ent, features)
            times.append(time.perf_counter() - t0)
        hand_ent = pa.table({"rn": pa.array(range(ent.num_rows), pa.int64()), "card_id": ent["card_id"],
                             "t": ent["event_time"].cast(pa.int64())})
        q.con.register("ent", hand_ent)
        sql = pit_hand_sql(agg, file_list(q.source(src.name)))
        hand_times: list[float] = []
        hand = None
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            hand = q.con.sql(sql).to_arrow_table()
            hand_times.append(time.perf_counter() - t0)
        assert ours is not None and hand is not None
        diffs = pit_differences(agg, ours, hand)
        t_ours, t_hand = statistics.median(times), statistics.median(hand_times)
        n_aggs = len(agg.aggregation.aggregates)
        print(f"           (e) data: {args.pit_events:,} events of {cards:,} cards over {PIT_SPAN_DAYS} days in "
              f"{len(q.source(src.name).files())} data file(s), {args.pit_rows:,} entity rows read at 00:00 UTC; "
              f"{n_aggs} aggregates {PIT_FEATURES}; built in {built:.1f} s under {root}")
        print(f"RESULT (e) pit         get_historical_features {t_ours:.2f} s   hand-written DuckDB range join "
              f"{t_hand:.2f} s   ours/hand-written {t_ours / t_hand:.2f}x   (median of {args.repeat}; {args.pit_rows:,} rows x "
              f"{args.pit_events:,} events, {n_aggs} aggregates)   same answer: {not diffs}   {load_average()}")
        q.close()
        if diffs:
            raise SystemExit("MISMATCH between get_historical_features and the hand-written query:\n  "
                             + "\n  ".join(diffs))
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a check that every phase runs")
    parser.add_argument("--rate", type=int, default=5000, help="(a) steady events/s")
    parser.add_argument("--steady-seconds", type=float, default=60.0)
    parser.add_argument("--keys", type=int, default=10_000, help="(a)/(d) distinct aggregation keys")
    parser.add_argument("--days", type=float, default=90.0, help="(b) simulated days of events")
    parser.add_argument("--memory-keys", type=int, default=3, help="(b) aggregation keys folded over --days")
    parser.add_argument("--reads", type=int, default=20_000, help="(c) reads of each kind")
    parser.add_argument("--backfill-events", type=int, default=1_000_000)
    parser.add_argument("--pit-rows", type=int, default=1_000_000)
    parser.add_argument("--pit-events", type=int, default=10_000_000)
    parser.add_argument("--pit-dir", default="/tmp/featurestream-bench-pitagg",
                        help="(e) where its Iceberg catalog and warehouse are built (removed before and after)")
    parser.add_argument("--repeat", type=int, default=3, help="(e) runs of each query (median)")
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--only", choices=["live", "memory", "backfill", "pit"])
    args = parser.parse_args(argv)
    if args.quick:
        args.rate, args.steady_seconds, args.keys, args.days, args.memory_keys = 200, 3.0, 100, 0.05, 2
        args.reads, args.backfill_events, args.pit_rows, args.pit_events = 200, 2000, 1000, 10_000
    if args.only == "pit":  # (e) builds its own Iceberg table: no services needed
        print(f"# bench/aggregations.py --only pit {load_average()}")
        pit(args)
        print(f"# done; {load_average()}")
        return 0
    config = Config.from_env()
    if not (config.kafka_bootstrap and config.redis_url):
        print('run `eval "$(.venv/bin/featurestream up)"` first: no Kafka/Redis endpoints configured', file=sys.stderr)
        return 2
    client = redis.Redis.from_url(config.redis_url)
    print(f"# bench/aggregations.py {'--quick ' if args.quick else ''}{load_average()}")
    with tempfile.TemporaryDirectory(prefix="bench-agg-") as tmp:
        if args.only in (None, "live"):
            base_lat, base_cpu = live_run(config, args, Path(tmp), aggregate=False)
            lat, cpu = live_run(config, args, Path(tmp), aggregate=True)
            for what, xs, c in (("aggregation (3 windows x 5 functions)", lat, cpu),
                                ("latest-value path (baseline)", base_lat, base_cpu)):
                xs.sort()
                print(f"RESULT (a) live        {what}: event-to-readable p50 {percentile(xs, 50):.1f} ms p99 "
                      f"{percentile(xs, 99):.1f} ms ({len(xs)} probes at {args.rate:,}/s); processor "
                      f"{c:.0f} CPU-µs/event")
            print(f"RESULT (a) live        CPU ratio aggregation / latest-value {cpu / base_cpu:.2f}x (goal <= 2x)")
        if args.only in (None, "memory"):
            memory_and_reads(config, args, client)
        if args.only in (None, "backfill"):
            backfill(config, args)
        if args.only in (None, "pit"):
            pit(args)
    print(f"# done; {load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
