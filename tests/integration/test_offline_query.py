"""Offline queries against a REAL S3-compatible server (the `stack` fixture's): SQL, snapshot,
point-in-time join over an Iceberg table on S3 read through pyiceberg, and a clear error when
S3 is down."""

from __future__ import annotations

import socket
import time
import uuid

import pandas as pd
import pytest

from schemas.ddl import offline_arrow_schema
from schemas.errors import FeatureStoreError
from schemas.group import FeatureGroup
from schemas.names import offline_table_uri
from schemas.types import FeatureDefinition
from sinks.offline.catalog import OfflineTables
from sinks.offline.query import OfflineQuery
from sinks.offline.query_source import OfflineSource
from tests.support.evolved_table import SCHEMA_V2, STAGES, build_history
from tests.support.evolved_table import T0 as HIST_T0
from tests.support.query_fixtures import row, write_table

pytestmark = pytest.mark.integration

T0 = 1_633_176_000 * 1_000_000_000
H = 3600 * 1_000_000_000


def make_group(offline_uri: str) -> FeatureGroup:
    name = f"q-{uuid.uuid4().hex[:8]}"
    return FeatureGroup(
        name=name, record_identifier_name="customer_id", event_time_name="event_time",
        features=(FeatureDefinition("customer_id", "String"), FeatureDefinition("event_time", "String"),
                  FeatureDefinition("age", "Integral")),
        offline_uri=offline_table_uri(offline_uri, name, int(time.time())))


def put_rows(tables: OfflineTables, g: FeatureGroup, rows: list[tuple]) -> None:
    """rows: (id, event_time_ns, offset, deleted, age), committed to the group's table on S3."""
    write_table(tables, g.name, offline_arrow_schema(g),
                [row(r[0], r[1], r[2], deleted=r[3], **({} if r[3] else {"age": r[4]})) for r in rows],
                location=g.offline_uri, files_per_partition=2)


def test_sql_snapshot_and_pit_on_s3(stack, tmp_path):
    g = make_group(stack.offline_uri)
    tables = OfflineTables.open(f"sqlite:///{tmp_path / 'catalog.db'}", "q", stack.storage_options())
    put_rows(tables, g, [("a", T0, 0, False, 1), ("a", T0 + H, 1, False, 2), ("a", T0 + H, 2, False, 3),
                         ("b", T0, 3, False, 9), ("b", T0 + 2 * H, 4, True, None)])
    with OfflineQuery([g], tables=tables) as q:
        assert q.sql(f'SELECT count(*) AS n FROM "{g.name}"')["n"].to_pylist() == [5]
        snap = q.snapshot(g.name)
        assert snap["customer_id"].to_pylist() == ["a"] and snap["age"].to_pylist() == [3]
        past = q.snapshot(g.name, as_of="2021-10-02T13:30:00Z")
        assert dict(zip(past["customer_id"].to_pylist(), past["age"].to_pylist(), strict=True)) == {"a": 3, "b": 9}
        ent = pd.DataFrame({"customer_id": ["b", "a", "a", "zz"],
                            "event_time": pd.to_datetime([T0 + 3 * H, T0 + H, T0, T0], utc=True)})
        out = q.get_historical_features(ent, [f"{g.name}:age"])
        assert out["age"].to_pylist() == [None, 3, 1, None]


def test_s3_down_is_a_clear_error(stack, tmp_path):
    g = make_group(stack.offline_uri)
    catalog = f"sqlite:///{tmp_path / 'catalog.db'}"
    put_rows(OfflineTables.open(catalog, "q", stack.storage_options()), g, [("a", T0, 0, False, 1)])
    with socket.socket() as s:  # a loopback port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    opts = {"client_kwargs": {"endpoint_url": f"http://127.0.0.1:{port}"}, "key": "k", "secret": "s",
            "config_kwargs": {"connect_timeout": 1, "retries": {"max_attempts": 1}}}
    started = time.monotonic()
    with pytest.raises(FeatureStoreError) as info, OfflineQuery([g], tables=OfflineTables.open(catalog, "q", opts)) as q:
        q.sql(f'SELECT count(*) FROM "{g.name}"')
    assert time.monotonic() - started < 60
    assert g.name in str(info.value)


def test_duckdb_reads_the_files_on_s3_as_pyiceberg_did(stack, tmp_path):
    """On S3, a table with snapshots, record deletes, an added feature and a compaction, pinned at
    each stage: DuckDB reading the data files gives what pyiceberg's Arrow gave, bit for bit."""
    tables = OfflineTables.open(f"sqlite:///{tmp_path / 'catalog.db'}", "q", stack.storage_options())
    name = f"h-{uuid.uuid4().hex[:8]}"
    location = offline_table_uri(stack.offline_uri, name, int(time.time()))
    table, snaps, written = build_history(tables, name, location, seed=5)
    ent = pd.DataFrame({"customer_id": ["c0", "c1", "c2", "c3", "c4", "c5", "zz"] * 3,
                        "event_time": pd.to_datetime([HIST_T0 + k * 3_600_000_000_000 * 12 + 7 for k in range(21)],
                                                     utc=True)})
    for stage in STAGES:
        src = OfflineSource(name, "customer_id", "event_time", SCHEMA_V2, table=table, snapshot_id=snaps[stage])
        got = {}
        for scan in ("duckdb", "pyiceberg"):
            with OfflineQuery([src], scan=scan) as q:
                got[scan] = (q.get_historical_features(ent, [f"{name}:*"]),
                             q.sql(f'SELECT * FROM "{name}" ORDER BY _kafka_offset'))
                assert q.reads == {name: scan}  # no silent fallback
        assert got["duckdb"][0].equals(got["pyiceberg"][0]), stage
        assert got["duckdb"][1].equals(got["pyiceberg"][1]), stage
    assert got["duckdb"][1].num_rows == len(written)
