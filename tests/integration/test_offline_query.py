"""Offline queries against a REAL S3-compatible server (the `stack` fixture's): SQL, snapshot,
point-in-time join over Parquet read through s3fs, and a clear error when S3 is down."""

from __future__ import annotations

import socket
import time
import uuid

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from schemas.ddl import offline_arrow_schema
from schemas.errors import FeatureStoreError
from schemas.group import FeatureGroup
from schemas.names import offline_table_uri, partition_path
from schemas.types import FeatureDefinition
from sinks.offline.fs import open_filesystem
from sinks.offline.query import OfflineQuery

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


def put_rows(fs, root: str, schema: pa.Schema, rows: list[tuple]) -> None:
    """rows: (id, event_time_ns, offset, deleted, age); one file per event-time hour."""
    by_hour: dict[str, list[tuple]] = {}
    for r in rows:
        by_hour.setdefault(partition_path(r[1]), []).append(r)
    for part, rs in by_hour.items():
        t = pa.table({
            "customer_id": [r[0] for r in rs], "event_time": pa.array([r[1] for r in rs]).cast(schema.field(1).type),
            "age": pa.array([None if r[3] else r[4] for r in rs], pa.int64()),
            "api_invocation_time": pa.array([r[1] for r in rs]).cast(schema.field(1).type),
            "write_time": pa.array([r[1] for r in rs]).cast(schema.field(1).type),
            "is_deleted": [r[3] for r in rs], "_kafka_topic": ["t"] * len(rs),
            "_kafka_partition": pa.array([0] * len(rs), pa.int32()),
            "_kafka_offset": pa.array([r[2] for r in rs], pa.int64())}, schema=schema)
        with fs.open(f"{root}/data/{part}/t+00000+{rs[0][2]:020d}.parquet", "wb") as f:
            pq.write_table(t, f)


@pytest.mark.parametrize("reader", ["auto", "arrow"])
def test_sql_snapshot_and_pit_on_s3(stack, reader):
    g = make_group(stack.offline_uri)
    opts = stack.storage_options()
    fs, root = open_filesystem(g.offline_uri, opts)
    schema = offline_arrow_schema(g)
    put_rows(fs, root, schema, [("a", T0, 0, False, 1), ("a", T0 + H, 1, False, 2), ("a", T0 + H, 2, False, 3),
                                ("b", T0, 3, False, 9), ("b", T0 + 2 * H, 4, True, None)])
    with OfflineQuery([g], storage_options=opts, reader=reader) as q:
        assert q.sql(f'SELECT count(*) AS n FROM "{g.name}"')["n"].to_pylist() == [5]
        snap = q.snapshot(g.name)
        assert snap["customer_id"].to_pylist() == ["a"] and snap["age"].to_pylist() == [3]
        past = q.snapshot(g.name, as_of="2021-10-02T13:30:00Z")
        assert dict(zip(past["customer_id"].to_pylist(), past["age"].to_pylist(), strict=True)) == {"a": 3, "b": 9}
        ent = pd.DataFrame({"customer_id": ["b", "a", "a", "zz"],
                            "event_time": pd.to_datetime([T0 + 3 * H, T0 + H, T0, T0], utc=True)})
        out = q.get_historical_features(ent, [f"{g.name}:age"])
        assert out["age"].to_pylist() == [None, 3, 1, None]


def test_s3_down_is_a_clear_error(stack):
    with socket.socket() as s:  # a loopback port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    g = make_group("s3://featurestream-nowhere/offline")
    opts = {"client_kwargs": {"endpoint_url": f"http://127.0.0.1:{port}"}, "key": "k", "secret": "s",
            "config_kwargs": {"connect_timeout": 1, "retries": {"max_attempts": 1}}}
    started = time.monotonic()
    with pytest.raises(FeatureStoreError) as info:
        OfflineQuery([g], storage_options=opts)
    assert time.monotonic() - started < 60
    assert "featurestream-nowhere" in str(info.value)
