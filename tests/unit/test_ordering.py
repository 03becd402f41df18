"""schemas.ordering: every derivation of "which record wins" agrees, on random versions full of ties.

The online store's Lua script is checked against the same generator with a real Redis in
tests/integration/test_online_store.py (test_concurrent_writers_end_at_the_brute_force_latest).
"""

from __future__ import annotations

import random

import duckdb
import pyarrow as pa
import pytest

from schemas.ordering import (
    PIT_OFFSET_BITS,
    latest_order_sql,
    pit_key,
    pit_key_sql,
    script_args,
    version_key,
    wins,
)
from sinks.offline.query import OfflineQuery
from sinks.offline.query_source import quote_ident
from tests.support.query_fixtures import make_source, row, table_schema

T0 = 1_633_176_000 * 1_000_000_000
SCHEMA = table_schema("id", "event_time", {"v": pa.int64()})


def random_versions(rng: random.Random, n: int = 120) -> list[dict]:
    """Versions of a few ids with very few distinct event times, over three partitions, with
    api_invocation_time and write_time that disagree with the Kafka position (two producers
    with skewed clocks, files flushed out of order): the cases where the rule matters."""
    rows, offsets = [], {0: 0, 1: 0, 2: 0}
    for i in range(n):
        partition = rng.randrange(3)
        offset = offsets[partition] = offsets[partition] + rng.randrange(1, 4)
        et = T0 + rng.choice([0, 0, 0, 1, 2_000]) + rng.choice([0, 3_600 * 10**9])
        r = row(f"k{rng.randrange(6)}", et, offset, deleted=rng.random() < 0.1, v=i,
                ait_ns=T0 + rng.randrange(5), wt_ns=T0 + rng.randrange(5))
        r["_kafka_partition"] = partition
        rows.append(r)
    rng.shuffle(rows)  # arrival order says nothing
    return rows


def key_of(r: dict):
    return version_key(r["__et"], r["_kafka_partition"], r["_kafka_offset"])


def oracle(rows: list[dict]) -> dict[str, dict]:
    best: dict[str, dict] = {}
    for r in rows:
        if wins(key_of(r), key_of(best[r["__id"]]) if r["__id"] in best else None):
            best[r["__id"]] = r
    return best


def test_the_key_is_event_time_then_partition_then_offset():
    assert version_key(2, 0, 0) > version_key(1, 9, 9)
    assert version_key(1, 1, 0) > version_key(1, 0, 9)
    assert version_key(1, 0, 5) > version_key(1, 0, 4)
    assert not wins(version_key(1, 0, 5), version_key(1, 0, 5))  # a duplicate changes nothing
    assert wins(version_key(-5, 0, 0), None)
    assert script_args(-17, 2, 30) == ["-17", "2", "30"]


@pytest.mark.parametrize("seed", range(10))
def test_pit_key_orders_as_the_version_key(seed):
    rng = random.Random(seed)
    keys = [version_key(rng.choice([-(10**18), -1, 0, 1, T0, T0 + 1]), rng.randrange(2**16),
                        rng.randrange(2**PIT_OFFSET_BITS)) for _ in range(300)]
    assert sorted(keys) == sorted(keys, key=lambda k: pit_key(*k))
    con = duckdb.connect()
    table = pa.table({"et": [k[0] for k in keys], "_kafka_partition": [k[1] for k in keys],
                      "_kafka_offset": [k[2] for k in keys]})
    con.register("t", table)
    got = [int(x[0]) for x in con.execute(f"SELECT {pit_key_sql('et')} FROM t").fetchall()]
    assert got == [pit_key(*k) for k in keys]


def test_pit_key_refuses_positions_it_cannot_pack():
    with pytest.raises(ValueError, match="outside the point-in-time key's range"):
        pit_key(0, 0, 2**PIT_OFFSET_BITS)


@pytest.mark.parametrize("seed", range(12))
def test_sql_latest_snapshot_and_pit_pick_the_oracles_version(tmp_path, seed):
    rng = random.Random(seed)
    rows = random_versions(rng)
    want = oracle(rows)
    src = make_source(tmp_path, "g", SCHEMA, rows, files_per_partition=rng.choice([1, 3]))
    with OfflineQuery([src]) as q:
        # The bare ORDER BY, as the README prints the SPEC's latest-record query.
        order = latest_order_sql(quote_ident("event_time"))
        got = q.execute(f'SELECT id, v, is_deleted FROM (SELECT *, row_number() OVER (PARTITION BY id '
                        f'ORDER BY {order}) AS rk FROM "g") WHERE rk = 1')
        by_sql = {r["id"]: r for r in got.to_pylist()}
        assert set(by_sql) == set(want)
        for rid, r in want.items():
            assert by_sql[rid]["is_deleted"] == r["is_deleted"], rid
            if not r["is_deleted"]:
                assert by_sql[rid]["v"] == r["v"], rid
        # snapshot() (latest_rows_sql), deletes included and excluded
        snap = {r["id"]: r for r in q.snapshot("g", include_deleted=True).to_pylist()}
        assert {rid: (s["is_deleted"], s["v"]) for rid, s in snap.items()} == \
            {rid: (r["is_deleted"], r.get("v")) for rid, r in want.items()}
        live = {r["id"] for r in q.snapshot("g").to_pylist()}
        assert live == {rid for rid, r in want.items() if not r["is_deleted"]}
        # point-in-time join at each id's winning event time: the same version, ties and all
        ids = sorted(want)
        entity = pa.table({"id": ids, "event_time": pa.array([want[i]["__et"] for i in ids], pa.int64())
                           .cast(pa.timestamp("ns", "UTC"))})
        out = q.get_historical_features(entity, ["g:v"])
        for rid, v in zip(ids, out.column("v").to_pylist(), strict=True):
            assert v == (None if want[rid]["is_deleted"] else want[rid]["v"]), rid
