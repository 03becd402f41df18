"""The offline writer against a REAL S3 server: an Iceberg table on S3, commits with offsets, a
crash between upload and commit, a server that is down, wrong credentials."""

from __future__ import annotations

import secrets
import time
from collections import Counter
from dataclasses import replace

import pytest

from featurestream.config import Config
from featurestream.stack.ports import free_port
from sinks.offline.catalog import LIFE_PROPERTY, OfflineTables
from sinks.offline.errors import OfflineStorageError, StaleGroupError
from sinks.offline.fs import open_filesystem
from sinks.offline.table_commit import recorded_offsets
from sinks.offline.writer import OfflineWriter
from tests.support.offline import HOUR_NS, T0, TOPIC, delete, make_group, put, table_coordinates

pytestmark = pytest.mark.integration


@pytest.fixture
def env(s3_config: Config, tmp_path):
    """(tables, group) with the group's table at a fresh prefix of the S3 bucket."""
    opts = s3_config.storage_options()
    base = f"{s3_config.offline_uri}/t-{secrets.token_hex(4)}"
    fs, root = open_filesystem(base, opts)
    bucket = root.split("/", 1)[0]
    if not fs.exists(bucket):
        fs.mkdir(bucket)
    tables = OfflineTables.open(f"sqlite:///{tmp_path / 'catalog.db'}", "it", opts)
    yield tables, make_group(offline_uri=f"{base}/customers-1700000000")
    fs.rm(root, recursive=True) if fs.exists(root) else None


def msg(offset: int):
    ns = T0 + (offset % 3) * 9 * HOUR_NS + offset
    return delete(offset, ns) if offset % 11 == 0 else put(offset, ns)


def run_batch(w: OfflineWriter, g, first: int, last: int):
    for o in range(first, last + 1):
        w.add(g, msg(o), TOPIC, 0, o)
    return w.flush(TOPIC, 0)


def test_an_iceberg_table_on_s3_with_offsets_in_its_snapshots(env) -> None:
    tables, g = env
    r = run_batch(OfflineWriter(tables), g, 0, 59)
    assert r.next_offset == 60 and r.files and all(f.startswith(f"{g.offline_uri}/data/event_time_day=2023-11-")
                                                   for f in r.files)
    table = tables.existing(g)
    assert table.location() == g.offline_uri and recorded_offsets(table) == {(TOPIC, 0): 60}
    assert table_coordinates(tables, g) == Counter((TOPIC, 0, o) for o in range(60))
    assert table.metadata_location.startswith(f"{g.offline_uri}/metadata/")


def test_crash_between_upload_and_commit_on_s3(env) -> None:
    tables, g = env
    w = OfflineWriter(tables)
    assert run_batch(w, g, 0, 49).next_offset == 50

    class Crash(Exception):
        pass

    def die(stage: str) -> None:
        if stage == "after_upload":
            raise Crash

    with pytest.raises(Crash):
        run_batch(OfflineWriter(tables, stage_hook=die), g, 50, 120)
    w2 = OfflineWriter(tables)
    assert w2.resume(g, TOPIC, 0) == 50
    run_batch(w2, g, 50, 150)
    assert table_coordinates(tables, g) == Counter((TOPIC, 0, o) for o in range(151))


def test_s3_server_down_is_a_clear_error_within_a_deadline(tmp_path) -> None:
    port = free_port()  # nothing listens here
    opts = {"key": "k", "secret": "s", "client_kwargs": {"endpoint_url": f"http://127.0.0.1:{port}"},
            "config_kwargs": {"connect_timeout": 1, "retries": {"max_attempts": 1}}}
    tables = OfflineTables.open(f"sqlite:///{tmp_path / 'catalog.db'}", "it", opts)
    g = make_group(offline_uri="s3://bucket/offline/customers-1")
    w = OfflineWriter(tables)
    w.add(g, put(1), TOPIC, 0, 1)
    start = time.monotonic()
    with pytest.raises(OfflineStorageError, match="S3 server up|customers"):
        w.flush(TOPIC, 0)
    assert time.monotonic() - start < 60
    assert w.buffered_rows() == 1, "rows must stay buffered for the retry"


def test_wrong_credentials_are_a_clear_error(env, s3_config, tmp_path) -> None:
    _, g = env
    opts = {**s3_config.storage_options(), "key": "nobody", "secret": "wrong"}
    tables = OfflineTables.open(f"sqlite:///{tmp_path / 'denied.db'}", "it", opts)
    w = OfflineWriter(tables)
    w.add(replace(g, offline_uri=f"{g.offline_uri}-denied"), put(1), TOPIC, 0, 1)
    with pytest.raises((OfflineStorageError, PermissionError, OSError)):
        w.flush(TOPIC, 0)


def _lives(env, seconds_later: int = 5):
    """The env's group (life 1), the same name created again ``seconds_later`` (life 2) at its own
    location, and a guarded OfflineTables over the same catalog whose registry is ``current``."""
    tables, g1 = env
    g2 = replace(g1, creation_time=g1.creation_time + seconds_later,
                 offline_uri=g1.offline_uri.rsplit("-", 1)[0] + f"-{int(g1.creation_time) + seconds_later}")
    current: set[str] = {g1.life}
    guarded = OfflineTables(tables.catalog, tables.namespace, is_current=lambda g: g.life in current)
    return tables, guarded, g1, g2, current


def _purge_files(g, opts) -> None:
    fs, root = open_filesystem(g.offline_uri, opts)
    fs.rm(root, recursive=True)
    fs.invalidate_cache()


def test_a_writer_of_a_purged_life_creates_nothing_and_never_drops_the_next_lifes_table(env, s3_config) -> None:
    """The race a purge had with a running sink: rows of the deleted life, buffered before the delete,
    flushed after the purge. They must not bring the table back at the purged location, nor, once the
    name lives again, unregister the new life's table."""
    tables, guarded, g1, g2, current = _lives(env)
    stale = OfflineWriter(guarded)
    assert run_batch(stale, g1, 0, 9).next_offset == 10
    for o in range(10, 20):
        stale.add(g1, msg(o), TOPIC, 0, o)
    # The group is deleted (the registry no longer has life 1) and purged.
    current.clear()
    assert tables.drop_life(g1) is True
    _purge_files(g1, s3_config.storage_options())
    with pytest.raises(StaleGroupError, match="was deleted, or deleted and created again"):
        stale.flush(TOPIC, 0)
    assert tables.identifier(g1) not in tables.catalog.list_tables(tables.namespace)
    fs, root = open_filesystem(g1.offline_uri, s3_config.storage_options())
    assert not fs.exists(root), fs.find(root)

    # The name lives again; its writer creates its table at its own location.
    current.add(g2.life)
    fresh = OfflineWriter(guarded)
    assert run_batch(fresh, g2, 0, 4).next_offset == 5
    assert tables.existing(g2).properties[LIFE_PROPERTY] == g2.life
    # The stale writer, and an unguarded one (a migration, a replay tool) of the first life: refused.
    for writer in (OfflineWriter(guarded), OfflineWriter(tables)):
        for o in range(20, 25):
            writer.add(g1, msg(o), TOPIC, 0, o)
        with pytest.raises(StaleGroupError):
            writer.flush(TOPIC, 0)
    assert tables.existing(g2).location() == g2.offline_uri
    assert table_coordinates(tables, g2) == Counter((TOPIC, 0, o) for o in range(5))
    assert tables.drop_life(g1) is False  # not life 1's table: left alone
    assert tables.existing(g2) is not None


def test_a_purged_lifes_dangling_entry_gives_way_to_the_next_life(env, s3_config) -> None:
    """The end state the race left: a catalog entry whose files the purge deleted. The lost life's own
    writer gets a clear error; the next life creates its table; the purge's second look drops it."""
    tables, guarded, g1, g2, current = _lives(env)
    run_batch(OfflineWriter(tables), g1, 0, 9)
    _purge_files(g1, s3_config.storage_options())
    with pytest.raises(OfflineStorageError, match="has lost its metadata"):
        tables.existing(g1)
    current.add(g2.life)
    assert run_batch(OfflineWriter(guarded), g2, 0, 4).next_offset == 5
    assert table_coordinates(tables, g2) == Counter((TOPIC, 0, o) for o in range(5))
    # The same state again, dropped by the purge's own second look instead.
    _purge_files(g2, s3_config.storage_options())
    assert tables.drop_life(g2) is True
    assert tables.identifier(g2) not in tables.catalog.list_tables(tables.namespace)
