"""The offline writer against a REAL S3 server: files, exactly-once redelivery, a server that is
down, and throughput of rows.py + write versus raw pyarrow to the same server."""

from __future__ import annotations

import secrets
import time
from collections import Counter

import duckdb
import pyarrow.parquet as pq
import pytest

from featurestream.config import Config
from featurestream.stack.ports import free_port
from sinks.offline import layout
from sinks.offline.catalog import list_live_files, live_file_uris
from sinks.offline.errors import OfflineStorageError
from sinks.offline.fs import open_filesystem, write_atomic
from sinks.offline.writer import OfflineWriter, table_path_for
from tests.support.offline import HOUR_NS, T0, TOPIC, delete, live_coordinates, make_group, put

pytestmark = pytest.mark.integration
G = make_group()


@pytest.fixture
def s3(s3_config: Config):
    """(fs, root) of a fresh prefix in the S3 bucket; the bucket is created if missing."""
    fs, root = open_filesystem(f"{s3_config.offline_uri}/t-{secrets.token_hex(4)}", s3_config.storage_options())
    bucket = root.split("/", 1)[0]
    if not fs.exists(bucket):
        fs.mkdir(bucket)
    yield fs, root
    fs.rm(root, recursive=True) if fs.exists(root) else None


def msg(offset: int):
    ns = T0 + (offset % 3) * HOUR_NS + offset
    return delete(offset, ns) if offset % 11 == 0 else put(offset, ns)


def run_batch(w: OfflineWriter, first: int, last: int):
    for o in range(first, last + 1):
        w.add(G, msg(o), TOPIC, 0, o)
    return w.flush(TOPIC, 0)


def test_files_on_s3_are_hive_laid_out_and_queryable(s3, s3_config) -> None:
    fs, root = s3
    r = run_batch(OfflineWriter(fs, root), 0, 59)
    table = table_path_for(fs, root, G)
    assert len(r.files) == 3 and r.next_offset == 60
    for path in list_live_files(fs, table):
        assert "/data/year=2023/month=11/day=1" in path
        name = layout.parse_data_file_name(path)
        assert name is not None and name.topic == TOPIC
        with fs.open(path, "rb") as f:
            assert int(pq.read_metadata(f).metadata[layout.META_LAST]) >= name.first_offset
    assert live_coordinates(fs, table) == Counter((TOPIC, 0, o) for o in range(60))
    assert all(u.startswith("s3://") for u in live_file_uris(fs, table))
    # the event time is a real timestamp for SQL (read the bytes back through pyarrow -> duckdb)
    with fs.open(list_live_files(fs, table)[0], "rb") as f:
        rows = pq.read_table(f)
    con = duckdb.connect()
    con.register("rows", rows)
    got = con.execute("select min(event_time) >= TIMESTAMPTZ '2023-11-14 22:00:00+00' from rows").fetchall()[0]
    assert got == (True,)


@pytest.mark.parametrize("redelivery_ends", [66, 99, 140])
def test_crash_before_commit_and_redelivery_on_s3(s3, redelivery_ends: int) -> None:
    fs, root = s3
    w = OfflineWriter(fs, root)
    committed = run_batch(w, 0, 49).next_offset
    run_batch(w, committed, 120)                       # files written, crash before the commit
    w2 = OfflineWriter(fs, root)
    c = run_batch(w2, committed, redelivery_ends).next_offset
    run_batch(w2, c, 150)
    assert live_coordinates(fs, table_path_for(fs, root, G)) == Counter((TOPIC, 0, o) for o in range(151))


def test_s3_server_down_is_a_clear_error_within_a_deadline() -> None:
    port = free_port()  # nothing listens here
    fs, root = open_filesystem("s3://bucket/offline", {
        "key": "k", "secret": "s", "client_kwargs": {"endpoint_url": f"http://127.0.0.1:{port}"},
        "config_kwargs": {"connect_timeout": 1, "retries": {"max_attempts": 1}}})
    w = OfflineWriter(fs, root)
    w.add(G, put(1), TOPIC, 0, 1)
    start = time.monotonic()
    with pytest.raises(OfflineStorageError, match="cannot write .*S3 server up"):
        w.flush(TOPIC, 0)
    assert time.monotonic() - start < 30
    assert w.buffered_rows() == 1, "rows must stay buffered for the retry"
    with pytest.raises(OfflineStorageError, match="cannot list"):
        list_live_files(fs, f"{root}/g-1")


def test_wrong_credentials_are_a_clear_error(s3_config) -> None:
    opts = {**s3_config.storage_options(), "key": "nobody", "secret": "wrong"}
    fs, root = open_filesystem(f"{s3_config.offline_uri}/denied", opts)
    with pytest.raises((OfflineStorageError, PermissionError)):
        write_atomic(fs, f"{root}/x.bin", b"x")
