"""Benchmark: point-in-time join over a 10M-row Iceberg offline table vs a hand-written DuckDB ASOF JOIN.

Generates one (or more) feature groups as Apache Iceberg tables in the production schema and
partitioning (``OfflineTables.table(group)``: the group's columns, the microsecond event time plus
the exact ``_event_time_ns``, ``day(event_time)`` partitions, zstd Parquet), filled by one pyiceberg
append each (default 1M ids x 10 events, 7 days of event time, ~1% deletes, ~5% equal event times
for one id), in a local SQLite catalog and warehouse under --dir (no services needed), and 1M entity
rows. Then times, in the same run (median of --repeat):

  ours      OfflineQuery.get_historical_features over the tables: pyiceberg plans the pinned snapshot's
            files (day partitions and statistics pruned by the entity rows' time range), DuckDB reads
            them with read_parquet (columns by field id) inside one statement; ties by Kafka offset,
            deletes, order kept
  previous  the same call with scan="pyiceberg" (pyiceberg reads the rows into Arrow, DuckDB joins them)
  baseline  the plain DuckDB ASOF LEFT JOIN people would write first, over read_parquet() of the same
            data files of the same snapshot (no tie-break, no deletes)
  correct   a hand-written DuckDB query over the same files that is correct (dedup window + ASOF +
            delete masking)

and checks that ours equals `correct`. Usage:

  .venv/bin/python bench/offline_pit.py [--ids 1000000 --events 10 --entities 1000000 --groups 1 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from schemas.ddl import offline_arrow_schema  # noqa: E402
from schemas.group import FeatureGroup  # noqa: E402
from schemas.types import FeatureDefinition  # noqa: E402
from sinks.offline.catalog import OfflineTables  # noqa: E402
from sinks.offline.query import OfflineQuery  # noqa: E402
from sinks.offline.query_source import OfflineSource  # noqa: E402
from sinks.offline.table_format import to_table_rows  # noqa: E402

S = 1_000_000_000
T0 = 1_633_046_400 * S  # 2021-10-01T00:00:00Z
SPAN = 7 * 86400 * S
TS = pa.timestamp("ns", "UTC")


NAMESPACE = "benchpit"


def group_for(i: int, root: Path) -> FeatureGroup:
    """Feature group ``group<i>``: identifier, event time and three features, its table under ``root``.
    A fixed creation time, so --keep finds the same table again."""
    feats = [FeatureDefinition("customer_id", "String"), FeatureDefinition("event_time", "String"),
             FeatureDefinition(f"g{i}_count", "Integral"), FeatureDefinition(f"g{i}_score", "Fractional"),
             FeatureDefinition(f"g{i}_tag", "String")]
    return FeatureGroup(name=f"group{i}", record_identifier_name="customer_id", event_time_name="event_time",
                        features=feats, creation_time=1_700_000_000.0, offline_uri=str(root / f"group{i}"))


def ids_text(ix: np.ndarray) -> pa.Array:
    return pc.binary_join_element_wise("c-", pa.array(ix).cast(pa.string()), "")


def generate_group(tables: OfflineTables, group: FeatureGroup, i: int, n_ids: int, events: int, seed: int) -> None:
    """Fill the group's Iceberg table with one append of the generated rows (view shape → the table
    shape the sink writes, ``to_table_rows``); pyiceberg splits them by day and target file size."""
    rng = np.random.default_rng(seed)
    n = n_ids * events
    ids = np.repeat(np.arange(n_ids), events)
    et = T0 + (rng.integers(0, SPAN // S, n) * S)  # whole seconds: equal times happen
    dup = rng.random(n) < 0.05  # force a tie with the previous event of the same id
    et[1:][dup[1:]] = et[:-1][dup[1:]]
    deleted = rng.random(n) < 0.01
    # Kafka order per id = write order; offsets grow through the whole partition.
    offsets = np.arange(n, dtype=np.int64)
    schema = offline_arrow_schema(group)
    table = pa.table({
        "customer_id": ids_text(ids), "event_time": pa.array(et, pa.int64()).cast(TS),
        f"g{i}_count": pa.array(np.where(deleted, 0, rng.integers(0, 1000, n))),
        f"g{i}_score": pa.array(rng.random(n), mask=deleted),
        f"g{i}_tag": pa.array(np.array(["x", "y", "z"])[rng.integers(0, 3, n)], mask=deleted),
        "api_invocation_time": pa.array(et, pa.int64()).cast(TS), "write_time": pa.array(et, pa.int64()).cast(TS),
        "is_deleted": pa.array(deleted), "_kafka_topic": pa.array(["t"] * n, pa.string()),
        "_kafka_partition": pa.array(np.zeros(n, np.int32)), "_kafka_offset": pa.array(offsets),
    }).select(schema.names).cast(schema)
    idx = schema.get_field_index(f"g{i}_count")
    table = table.set_column(idx, schema.field(idx), pc.if_else(table["is_deleted"], None, table[idx]))
    # In event-time order, as a live stream mostly arrives (the Hive-layout version sorted by hour):
    # row groups then cover narrow time ranges, which Parquet statistics prune.
    table = table.take(np.argsort(et, kind="stable"))
    tables.table(group).append(to_table_rows(table, "event_time"))


def entities(n: int, n_ids: int, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    ix = rng.integers(0, int(n_ids * 1.05), n)  # ~5% ids with no history
    ts = T0 - 3600 * S + rng.integers(0, (SPAN + 7200 * S) // S, n) * S  # some before any row
    return pa.table({"customer_id": ids_text(ix), "event_time": pa.array(ts, pa.int64()).cast(TS),
                     "label": pa.array(rng.integers(0, 2, n))})


def file_list(src: OfflineSource) -> str:
    """The data files of the snapshot the source pinned (the files ours reads), as a DuckDB list literal."""
    paths = [f.removeprefix("file://") for f in src.files()]
    return "[" + ", ".join("'" + p.replace("'", "''") + "'" for p in paths) + "]"


def baseline_sql(sources: list[OfflineSource]) -> str:
    cols, joins = ["e.*"], []
    for k, src in enumerate(sources):
        feats = src.schema.names[2:5]
        cols += [f"f{k}.{c}" for c in feats]
        joins.append(f"ASOF LEFT JOIN read_parquet({file_list(src)}) f{k} "
                     f"ON e.customer_id = f{k}.customer_id AND e.event_time >= f{k}.event_time")
    return f"SELECT {', '.join(cols)} FROM ent e {' '.join(joins)}"


def correct_sql(sources: list[OfflineSource]) -> str:
    ctes, cols, joins = ["e AS (SELECT *, row_number() OVER () AS rn FROM ent)"], ["e.* EXCLUDE (rn)"], []
    for k, src in enumerate(sources):
        feats = src.schema.names[2:5]
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


def run(groups: list[FeatureGroup], tables: OfflineTables, ent: pa.Table, repeat: int, threads: int | None) -> None:
    q = OfflineQuery(groups, tables=tables, threads=threads)
    sources = [q.source(g.name) for g in groups]
    q.con.register("ent", ent)
    features = [f"{s.name}:*" for s in sources]
    t_ours, ours = timed(lambda: q.get_historical_features(ent, features), repeat)
    if set(q.reads.values()) != {"duckdb"}:
        raise SystemExit(f"ours did not read the data files with DuckDB: {q.reads}")
    prev_q = OfflineQuery(groups, tables=tables, threads=threads, scan="pyiceberg")
    t_prev, prev = timed(lambda: prev_q.get_historical_features(ent, features), repeat)
    prev_q.close()
    t_base, base = timed(lambda: q.con.sql(baseline_sql(sources)).to_arrow_table(), repeat)
    t_corr, corr = timed(lambda: q.con.sql(correct_sql(sources)).to_arrow_table(), 1)
    same = ours.equals(corr.cast(ours.schema)) and ours.equals(prev)
    rows = sum(int(src.table.current_snapshot().summary["total-records"]) for src in sources)
    print(f"groups={len(sources)} entity_rows={ent.num_rows:,} feature_rows={rows:,} "
          f"data files/group={len(sources[0].files())}; {load_average()}")
    print(f"  ours (get_historical_features): {t_ours:8.2f} s  (median of {repeat})")
    print(f"  previous path (pyiceberg→Arrow):{t_prev:8.2f} s  (median of {repeat})")
    print(f"  baseline (plain DuckDB ASOF):   {t_base:8.2f} s  (median of {repeat}, {base.num_rows:,} rows, unordered)")
    print(f"  correct hand-written ASOF:      {t_corr:8.2f} s  (1 run)")
    ratio = t_ours / t_base
    print(f"RESULT pit groups={len(sources)}  ours {t_ours:.2f} s   plain DuckDB ASOF {t_base:.2f} s   ratio {ratio:.2f}x"
          f"   (goal within 1.5x: {'met' if ratio <= 1.5 else 'missed'})   ours/correct {t_ours / t_corr:.2f}x   "
          f"same answer as correct: {same}")
    print(f"RESULT pit-previous groups={len(sources)}  ours {t_ours:.2f} s   previous path (pyiceberg → Arrow) "
          f"{t_prev:.2f} s   speedup {t_prev / t_ours:.2f}x")
    if not same:
        raise SystemExit("MISMATCH between get_historical_features, its previous path and the hand-written "
                         "correct query")
    q.close()


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} cores"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ids", type=int, default=1_000_000)
    ap.add_argument("--events", type=int, default=10)
    ap.add_argument("--entities", type=int, default=1_000_000)
    ap.add_argument("--groups", type=int, nargs="+", default=[1, 3])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--dir", default="/tmp/featurestream-bench-pit")
    ap.add_argument("--keep", action="store_true", help="reuse/keep the generated tables")
    args = ap.parse_args()
    root = Path(args.dir)
    if root.exists() and not args.keep:
        shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)
    tables = OfflineTables.open(f"sqlite:///{root / 'catalog.db'}", NAMESPACE)
    t = time.perf_counter()
    groups = []
    for i in range(max(args.groups)):
        group = group_for(i, root)
        existing = tables.existing(group)
        if existing is None or existing.current_snapshot() is None:
            generate_group(tables, group, i, args.ids, args.events, seed=100 + i)
        groups.append(group)
    ent = entities(args.entities, args.ids, seed=7)
    print(f"data: {max(args.groups)} group(s) x {args.ids * args.events:,} rows in Iceberg tables ready in "
          f"{time.perf_counter() - t:.1f} s under {root}")
    for g in args.groups:
        run(groups[:g], tables, ent, args.repeat, args.threads)
    if not args.keep:
        shutil.rmtree(root)


if __name__ == "__main__":
    main()
