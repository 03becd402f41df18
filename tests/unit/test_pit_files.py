"""DuckDB reading the data files itself gives exactly what pyiceberg's Arrow gave (the previous path).

On a table with a history (several snapshots, record deletes, a feature added by an update, a
compaction), pinned at every stage: the point-in-time join, ``snapshot`` and plain SQL answer the
same, bit for bit, under ``scan="duckdb"`` and ``scan="pyiceberg"``. A table with a positional
delete file (which only another engine writes) is read through pyiceberg, deletes applied.
"""

from __future__ import annotations

import random
import struct
from datetime import timedelta

import pyarrow as pa
import pytest

from sinks.offline.query import OfflineQuery
from sinks.offline.query_errors import QueryError
from sinks.offline.query_source import EVENT_TIME_NS_COLUMN, OfflineSource
from tests.support.evolved_table import (
    DAY,
    IDS,
    SCHEMA_V1,
    SCHEMA_V2,
    STAGES,
    STEP,
    T0,
    add_position_deletes,
    build_history,
)
from tests.support.query_fixtures import make_source, open_tables, row

TS = pa.timestamp("ns", "UTC")


def entity_rows(rng: random.Random, n: int = 60) -> pa.Table:
    ids = [rng.choice([*IDS, "nobody"]) for _ in range(n)]
    ts = [T0 + rng.randrange(-3, 14) * STEP + rng.choice([0, DAY, 2 * DAY, 3 * DAY]) + rng.choice([0, 0, 1, -1])
          for _ in range(n)]
    return pa.table({"customer_id": ids, "event_time": pa.array(ts, pa.int64()).cast(TS),
                     "label": pa.array(range(n), pa.int64())})


def bits(table: pa.Table) -> list:
    """Rows with doubles as their bytes (-0.0 and 0.0 differ), for exact comparison."""
    def exact(v):
        if isinstance(v, float):
            return struct.pack("<d", v)
        if isinstance(v, list):
            return [exact(x) for x in v]
        return v
    return [{k: exact(v) for k, v in r.items()} for r in table.to_pylist()]


def answers(source: OfflineSource, scan: str, ent: pa.Table, max_age) -> dict[str, pa.Table]:
    with OfflineQuery([source], scan=scan) as q:
        name = source.name
        out = {
            "pit": q.get_historical_features(ent, [f"{name}:*", f"{name}:event_time"], max_age=max_age,
                                             full_feature_names=True),
            "snapshot": q.snapshot(name, include_deleted=True),
            "snapshot_as_of": q.snapshot(name, as_of=(T0 + DAY + 5 * STEP) / 1e9),
            "sql": q.sql(f'SELECT * FROM "{name}" ORDER BY _kafka_offset'),
        }
        assert q.reads == {name: scan}  # no silent fallback
        return out


@pytest.mark.parametrize("seed", range(3))
def test_both_read_paths_agree_on_a_table_with_a_history(tmp_path, seed):
    tables = open_tables(tmp_path)
    table, snaps, written = build_history(tables, "hist", tmp_path / "hist", seed)
    rng = random.Random(seed)
    for stage in STAGES:
        for view in (SCHEMA_V2, SCHEMA_V1):  # the group now, and a reader still on the old definition
            src = OfflineSource("hist", "customer_id", "event_time", view, table=table, snapshot_id=snaps[stage])
            ent = entity_rows(rng)
            max_age = rng.choice([None, timedelta(microseconds=5), timedelta(days=1)])
            ours, before = answers(src, "duckdb", ent, max_age), answers(src, "pyiceberg", ent, max_age)
            for what in ours:
                assert ours[what].schema == before[what].schema, (stage, what)
                assert bits(ours[what]) == bits(before[what]), (stage, what)
    # The comparison has teeth: the added features hold values after the update, and not before it.
    v2 = [r for r in written if r["_kafka_offset"] >= 60 and not r["is_deleted"] and r.get("tags")]
    with OfflineQuery([OfflineSource("hist", "customer_id", "event_time", SCHEMA_V2, table=table,
                                     snapshot_id=snaps["before_update"])]) as q:
        assert q.sql('SELECT count(tags) AS n FROM hist')["n"].to_pylist() == [0]
    with OfflineQuery([OfflineSource("hist", "customer_id", "event_time", SCHEMA_V2, table=table,
                                     snapshot_id=snaps["latest"])]) as q:
        got = q.sql("SELECT tags FROM hist WHERE _kafka_offset = ?", [v2[0]["_kafka_offset"]])
        assert got["tags"].to_pylist() == [v2[0]["tags"]]
        assert q.sql("SELECT count(*) AS n FROM hist")["n"].to_pylist() == [len(written)]


def test_a_table_with_position_deletes_is_read_through_pyiceberg(tmp_path):
    schema = SCHEMA_V1
    rows = [row("a", T0, 0, age=1), row("a", T0 + 10, 1, age=2), row("b", T0, 2, age=5)]
    src = make_source(tmp_path, "pd", schema, rows)
    data_file = next(iter(src.table.scan().plan_files())).file
    table = add_position_deletes(src.table, data_file, [1])  # the row of offset 1: ("a", T0 + 10, age 2)
    deleted = OfflineSource("pd", "customer_id", "event_time", schema, table=table,
                            snapshot_id=table.current_snapshot().snapshot_id)
    ent = pa.table({"customer_id": ["a", "b"], "event_time": pa.array([T0 + 20, T0], pa.int64()).cast(TS)})
    with OfflineQuery([deleted]) as q:
        assert q.get_historical_features(ent, ["pd:age"])["age"].to_pylist() == [1, 5]
        assert q.reads == {"pd": "pyiceberg"}
        assert q.sql("SELECT _kafka_offset FROM pd ORDER BY 1")["_kafka_offset"].to_pylist() == [0, 2]
    with OfflineQuery([src]) as q:  # the snapshot before the delete file: read by DuckDB, row there
        assert q.get_historical_features(ent, ["pd:age"])["age"].to_pylist() == [2, 5]
        assert q.reads == {"pd": "duckdb"}


def test_unknown_scan_is_a_typed_error(tmp_path):
    with pytest.raises(QueryError, match="scan must be one of.*'arrow'"):
        OfflineQuery([], scan="arrow")


@pytest.mark.parametrize("scan", ["duckdb", "pyiceberg"])
def test_the_event_time_ns_column_is_the_exact_event_time_within_the_bounds(tmp_path, scan):
    # The point-in-time join reads the stored nanoseconds instead of epoch_ns() of the view's
    # timestamp: the two must be the same numbers, on both read paths, bounds applied exactly.
    times = [T0 - 1, T0, T0 + 1, T0 + 999, T0 + 1_000, T0 + DAY]
    rows = [row(f"id{i}", t, i, age=i) for i, t in enumerate(times)]
    src = make_source(tmp_path, "ns", SCHEMA_V1, rows)
    with OfflineQuery([src], scan=scan) as q:
        rel = q.relation_sql("ns", since_ns=T0, as_of_ns=T0 + 999, with_event_time_ns=True)
        got = q.execute(f"SELECT epoch_ns(event_time) AS a, {EVENT_TIME_NS_COLUMN} AS b FROM {rel} ORDER BY b",
                        views=False)
        assert got["b"].type == pa.int64()
        assert got["a"].to_pylist() == got["b"].to_pylist() == [T0, T0 + 1, T0 + 999]
        plain = q.execute(f"SELECT * FROM {q.relation_sql('ns')}", views=False)
        assert EVENT_TIME_NS_COLUMN not in plain.column_names  # only when asked for
        assert q.reads == {"ns": scan}
