"""Benchmark: point-in-time join over a 10M-row offline table vs a hand-written DuckDB ASOF JOIN.

Generates one (or more) feature groups as Hive-partitioned Parquet (default 1M ids x 10 events,
7 days of event time, ~1% deletes, ~5% equal event times for one id), 1M entity rows, then
times, in the same run (median of --repeat):

  ours      sinks.offline.pit.get_historical_features (ties by Kafka offset, deletes, order)
  baseline  the plain DuckDB ASOF LEFT JOIN people would write first (no tie-break, no deletes)
  correct   a hand-written DuckDB query that is correct (dedup window + ASOF + delete masking)

and checks that ours equals `correct`. Usage:

  .venv/bin/python bench/offline_pit.py [--ids 1000000 --events 10 --entities 1000000 --groups 1]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from schemas.names import partition_path  # noqa: E402
from sinks.offline.query import OfflineQuery  # noqa: E402
from sinks.offline.query_source import OfflineSource  # noqa: E402

S = 1_000_000_000
T0 = 1_633_046_400 * S  # 2021-10-01T00:00:00Z
SPAN = 7 * 86400 * S
TS = pa.timestamp("ns", "UTC")


def schema_for(i: int) -> pa.Schema:
    return pa.schema([("customer_id", pa.string()), ("event_time", TS),
                      (f"g{i}_count", pa.int64()), (f"g{i}_score", pa.float64()), (f"g{i}_tag", pa.string()),
                      ("api_invocation_time", TS), ("write_time", TS), ("is_deleted", pa.bool_()),
                      ("_kafka_topic", pa.string()), ("_kafka_partition", pa.int32()),
                      ("_kafka_offset", pa.int64())])


def ids_text(ix: np.ndarray) -> pa.Array:
    return pc.binary_join_element_wise("c-", pa.array(ix).cast(pa.string()), "")


def generate_group(root: Path, i: int, n_ids: int, events: int, seed: int) -> OfflineSource:
    rng = np.random.default_rng(seed)
    n = n_ids * events
    ids = np.repeat(np.arange(n_ids), events)
    et = T0 + (rng.integers(0, SPAN // S, n) * S)  # whole seconds: equal times happen
    dup = rng.random(n) < 0.05  # force a tie with the previous event of the same id
    et[1:][dup[1:]] = et[:-1][dup[1:]]
    deleted = rng.random(n) < 0.01
    # Kafka order per id = write order; offsets grow through the whole partition.
    offsets = np.arange(n, dtype=np.int64)
    hour = (et - T0) // (3600 * S)
    order = np.argsort(hour, kind="stable")
    schema = schema_for(i)
    table = pa.table({
        "customer_id": ids_text(ids), "event_time": pa.array(et, pa.int64()).cast(TS),
        f"g{i}_count": pa.array(np.where(deleted, 0, rng.integers(0, 1000, n))),
        f"g{i}_score": pa.array(rng.random(n), mask=deleted),
        f"g{i}_tag": pa.array(np.array(["x", "y", "z"])[rng.integers(0, 3, n)], mask=deleted),
        "api_invocation_time": pa.array(et, pa.int64()).cast(TS), "write_time": pa.array(et, pa.int64()).cast(TS),
        "is_deleted": pa.array(deleted), "_kafka_topic": pa.array(["t"] * n, pa.string()),
        "_kafka_partition": pa.array(np.zeros(n, np.int32)), "_kafka_offset": pa.array(offsets),
    }, schema=schema)
    table = table.set_column(2, schema.field(2), pc.if_else(table["is_deleted"], None, table[2]))
    table = table.take(order)
    hours = hour[order]
    bounds = np.flatnonzero(np.diff(hours)) + 1
    starts = np.concatenate([[0], bounds])
    ends = np.concatenate([bounds, [n]])
    files = []
    gdir = root / f"group{i}"
    for s, e in zip(starts, ends, strict=True):
        part = partition_path(int(T0 + hours[s] * 3600 * S))
        d = gdir / "data" / part
        d.mkdir(parents=True, exist_ok=True)
        p = d / f"t+00000+{s:020d}.parquet"
        pq.write_table(table.slice(s, e - s), p, row_group_size=128 * 1024)
        files.append(str(p))
    return OfflineSource(name=f"group{i}", record_identifier_name="customer_id", event_time_name="event_time",
                         schema=schema, files=tuple(files))


def entities(n: int, n_ids: int, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    ix = rng.integers(0, int(n_ids * 1.05), n)  # ~5% ids with no history
    ts = T0 - 3600 * S + rng.integers(0, (SPAN + 7200 * S) // S, n) * S  # some before any row
    return pa.table({"customer_id": ids_text(ix), "event_time": pa.array(ts, pa.int64()).cast(TS),
                     "label": pa.array(rng.integers(0, 2, n))})


def file_list(src: OfflineSource) -> str:
    return "[" + ", ".join(f"'{f}'" for f in src.files) + "]"


def baseline_sql(sources: list[OfflineSource]) -> str:
    cols, joins = ["e.*"], []
    for k, src in enumerate(sources):
        feats = [n for n in src.schema.names[2:5]]
        cols += [f"f{k}.{c}" for c in feats]
        joins.append(f"ASOF LEFT JOIN read_parquet({file_list(src)}) f{k} "
                     f"ON e.customer_id = f{k}.customer_id AND e.event_time >= f{k}.event_time")
    return f"SELECT {', '.join(cols)} FROM ent e {' '.join(joins)}"


def correct_sql(sources: list[OfflineSource]) -> str:
    ctes, cols, joins = ["e AS (SELECT *, row_number() OVER () AS rn FROM ent)"], ["e.* EXCLUDE (rn)"], []
    for k, src in enumerate(sources):
        feats = [n for n in src.schema.names[2:5]]
        ctes.append(f"f{k} AS (SELECT customer_id, event_time, is_deleted, {', '.join(feats)} "
                    f"FROM read_parquet({file_list(src)}) "
                    f"QUALIFY row_number() OVER (PARTITION BY customer_id, event_time "
                    f"ORDER BY _kafka_offset DESC) = 1)")
        cols += [f"CASE WHEN f{k}.is_deleted THEN NULL ELSE f{k}.{c} END AS {c}" for c in feats]
        joins.append(f"ASOF LEFT JOIN f{k} ON e.customer_id = f{k}.customer_id AND e.event_time >= f{k}.event_time")
    return f"WITH {', '.join(ctes)} SELECT {', '.join(cols)} FROM e {' '.join(joins)} ORDER BY e.rn"


def timed(fn, repeat: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def run(sources: list[OfflineSource], ent: pa.Table, repeat: int, reader: str, threads: int | None) -> None:
    q = OfflineQuery({s.name: s for s in sources}, reader=reader, threads=threads)
    q.con.register("ent", ent)
    features = [f"{s.name}:*" for s in sources]
    t_ours, ours = timed(lambda: q.get_historical_features(ent, features), repeat)
    t_base, base = timed(lambda: q.con.sql(baseline_sql(sources)).to_arrow_table(), repeat)
    t_corr, corr = timed(lambda: q.con.sql(correct_sql(sources)).to_arrow_table(), 1)
    same = ours.equals(corr.cast(ours.schema))
    print(f"groups={len(sources)} entity_rows={ent.num_rows:,} reader={reader} "
          f"files/group={len(sources[0].files)}")
    print(f"  ours (get_historical_features): {t_ours:8.2f} s  (median of {repeat})")
    print(f"  baseline (plain DuckDB ASOF):   {t_base:8.2f} s  (median of {repeat}, {base.num_rows:,} rows, unordered)")
    print(f"  correct hand-written ASOF:      {t_corr:8.2f} s  (1 run)")
    print(f"  ratio ours/baseline = {t_ours / t_base:.2f}x ; ours/correct = {t_ours / t_corr:.2f}x ; "
          f"same answer as correct: {same}")
    if not same:
        raise SystemExit("MISMATCH between get_historical_features and the hand-written correct query")
    q.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ids", type=int, default=1_000_000)
    ap.add_argument("--events", type=int, default=10)
    ap.add_argument("--entities", type=int, default=1_000_000)
    ap.add_argument("--groups", type=int, nargs="+", default=[1, 3])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--reader", default="auto", choices=["auto", "duckdb", "arrow"])
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--dir", default="/tmp/featurestream-bench-pit")
    ap.add_argument("--keep", action="store_true", help="reuse/keep generated files")
    args = ap.parse_args()
    root = Path(args.dir)
    if root.exists() and not args.keep:
        shutil.rmtree(root)
    t = time.perf_counter()
    sources = []
    for i in range(max(args.groups)):
        marker = root / f"group{i}" / "DONE"
        if marker.exists():
            files = tuple(sorted(str(p) for p in (root / f"group{i}" / "data").rglob("*.parquet")))
            sources.append(OfflineSource(f"group{i}", "customer_id", "event_time", schema_for(i), files))
        else:
            sources.append(generate_group(root, i, args.ids, args.events, seed=100 + i))
            marker.write_text("ok")
    ent = entities(args.entities, args.ids, seed=7)
    print(f"data: {max(args.groups)} group(s) x {args.ids * args.events:,} rows ready in "
          f"{time.perf_counter() - t:.1f} s under {root}")
    for g in args.groups:
        run(sources[:g], ent, args.repeat, args.reader, args.threads)
    if not args.keep:
        shutil.rmtree(root)


if __name__ == "__main__":
    main()
