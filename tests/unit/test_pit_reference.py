"""The point-in-time join against a brute-force pure-Python reference, on randomised data.

Small pools of identifiers and event times make equal timestamps, out-of-order writes,
deletes, duplicates and misses common; both groups are joined in one call.
"""

from __future__ import annotations

import random
import struct
from datetime import timedelta

import pandas as pd
import pyarrow as pa
import pytest

from schemas.ordering import version_key, wins
from sinks.offline.query import OfflineQuery
from tests.support.query_fixtures import make_source, row, table_schema

T0 = 1_633_176_000 * 1_000_000_000
STEP = 1_000  # 1 us between candidate event times; with 3 hours of spread → several partitions
HOUR = 3600 * 1_000_000_000

SCHEMA_A = table_schema("customer_id", "event_time",
                        {"age": pa.int64(), "score": pa.float64(), "tags": pa.list_(pa.string())})
SCHEMA_B = table_schema("store_id", "ts", {"age": pa.int64(), "revenue": pa.float64()}, id_type=pa.int64())


def random_rows(rng: random.Random, ids: list, n: int, make) -> list[dict]:
    rows = []
    for offset in range(n):  # offsets in write order, event times in any order
        id_ = rng.choice(ids)
        et = T0 + rng.randrange(0, 12) * STEP + rng.choice([0, 0, HOUR, 2 * HOUR])
        if rng.random() < 0.15:
            rows.append(row(id_, et, offset, deleted=True))
        else:
            rows.append(row(id_, et, offset, **make(rng)))
    return rows


def reference(rows: list[dict], features: list[str], id_: object, ts: int, max_age_ns: int | None) -> list:
    best = None
    for r in rows:
        if r["__id"] == id_ and r["__et"] <= ts:
            key = version_key(r["__et"], r["_kafka_partition"], r["_kafka_offset"])
            if wins(key, None if best is None else version_key(best["__et"], best["_kafka_partition"],
                                                                 best["_kafka_offset"])):
                best = r
    if best is None or best["is_deleted"] or (max_age_ns is not None and ts - best["__et"] > max_age_ns):
        return [None] * len(features)
    return [best.get(f) for f in features]


@pytest.mark.parametrize("seed", range(8))
def test_pit_matches_brute_force(tmp_path, seed):
    rng = random.Random(seed)
    cust = [f"c{i}" for i in range(6)]
    stores = [1, 2, 3, -4]
    rows_a = random_rows(rng, cust, 60, lambda r: {
        "age": r.randrange(100), "score": r.choice([r.random(), None]),
        "tags": r.choice([["x"], ["x", "y"], [], None])})
    rows_b = random_rows(rng, stores, 40, lambda r: {"age": r.randrange(100), "revenue": r.random() * 1e6})
    src_a = make_source(tmp_path, "cust-a", SCHEMA_A, rows_a, files_per_partition=rng.choice([1, 3]))
    src_b = make_source(tmp_path, "store_b", SCHEMA_B, rows_b)

    n = 80
    ent_ids = [rng.choice(cust + ["nobody"]) for _ in range(n)]
    ent_stores = [rng.choice(stores + [99]) for _ in range(n)]
    # times before any row, at exact event times (ties at the boundary), between and after
    ent_ts = [T0 + rng.randrange(-3, 14) * STEP + rng.choice([0, HOUR, 2 * HOUR, 3 * HOUR]) + rng.choice([0, 0, 1, -1])
              for _ in range(n)]
    dup = rng.sample(range(n), 10)  # duplicated entity rows, interleaved
    order = list(range(n)) + dup
    rng.shuffle(order)
    entity = pa.table({
        "label": pa.array([f"L{i}" for i in order]),
        "customer_id": pa.array([ent_ids[i] for i in order]),
        "store_id": pa.array([ent_stores[i] for i in order], pa.int64()),
        "event_time": pa.array([ent_ts[i] for i in order], pa.int64()).cast(pa.timestamp("ns", "UTC")),
    })
    max_age = rng.choice([None, timedelta(microseconds=4), timedelta(hours=1)])
    max_age_ns = None if max_age is None else int(max_age / timedelta(microseconds=1)) * 1000

    with OfflineQuery([src_a, src_b]) as q:
        out = q.get_historical_features(entity, ["cust-a:*", "store_b:age", "store_b:revenue", "store_b:ts"],
                                        max_age=max_age, full_feature_names=True)

    assert out.column_names[:4] == entity.column_names
    assert out.slice(0, out.num_rows).select(entity.column_names).equals(entity)
    feats_a, feats_b = ["age", "score", "tags"], ["age", "revenue", "__et"]
    for k, i in enumerate(order):
        want_a = reference(rows_a, feats_a, ent_ids[i], ent_ts[i], max_age_ns)
        want_b = reference(rows_b, feats_b, ent_stores[i], ent_ts[i], max_age_ns)
        got_a = [out[f"cust-a__{f}"][k].as_py() for f in feats_a]
        got_b = [out[f"store_b__{f}"][k].as_py() for f in ("age", "revenue")]
        got_ts = out["store_b__ts"][k].value if out["store_b__ts"][k].is_valid else None
        assert got_a == want_a, (seed, k, ent_ids[i], ent_ts[i])
        assert got_b + [got_ts] == want_b, (seed, k, ent_stores[i], ent_ts[i])


def test_pit_pandas_in_pandas_out_with_known_answers(tmp_path):
    rows = [row("a", T0, 0, age=1), row("a", T0, 1, age=2),  # tie: later offset wins
            row("a", T0 + 10, 2, age=3), row("a", T0 + 20, 3, deleted=True), row("b", T0 + 5, 5, age=9)]
    src = make_source(tmp_path, "g", SCHEMA_A, rows)
    df = pd.DataFrame({"customer_id": ["a", "a", "a", "a", "b", "b", "zz", "a"],
                       "event_time": pd.to_datetime([T0 - 1, T0, T0 + 15, T0 + 20, T0 + 5, T0 + 4, T0, T0],
                                                    utc=True)})
    with OfflineQuery([src]) as q:
        out = q.get_historical_features(df, ["g:age"]).to_pandas()
        aged = q.get_historical_features(df, [("g", ["age"])], max_age=pd.Timedelta(5, "ns"))
    assert out["age"].fillna(-1).tolist() == [-1, 2, 3, -1, 9, -1, -1, 2]
    assert out["customer_id"].tolist() == df["customer_id"].tolist()
    # T0+15 looks back 5 ns to the row at T0+10: within 5 ns; T0 looks back 0 ns
    assert aged["age"].to_pylist() == [None, 2, 3, None, 9, None, None, 2]


def test_pit_keeps_negative_zero_in_lists_of_doubles(tmp_path):
    """DuckDB's ASOF join turns -0.0 inside a LIST of DOUBLE into 0.0; the join must not."""
    schema = table_schema("customer_id", "event_time", {"emb": pa.list_(pa.float64()), "score": pa.float64()})
    rows = [row("a", T0, 0, emb=[-0.0, 5e-324], score=-0.0), row("a", T0, 1, emb=[-0.0, 1.0], score=1.0),
            row("a", T0 + 10, 2, emb=[2.0], score=2.0), row("b", T0, 3, emb=[0.0, -0.0], score=-0.0)]
    src = make_source(tmp_path, "g", schema, rows)
    entity = pa.table({"customer_id": ["a", "b", "a", "zz"],
                       "event_time": pa.array([T0, T0 + 1, T0 + 10, T0], pa.int64()).cast(pa.timestamp("ns", "UTC"))})
    with OfflineQuery([src]) as q:
        out = q.get_historical_features(entity, ["g:emb", "g:score"])
    bits = [None if v is None else [struct.pack("<d", x) for x in v] for v in out["emb"].to_pylist()]
    assert bits == [[struct.pack("<d", x) for x in v] if v is not None else None
                    for v in ([-0.0, 1.0], [0.0, -0.0], [2.0], None)]  # the tie at T0: later offset wins
    assert [None if v is None else struct.pack("<d", v) for v in out["score"].to_pylist()] == \
        [struct.pack("<d", v) if v is not None else None for v in (1.0, -0.0, 2.0, None)]
