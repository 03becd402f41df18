"""Table maintenance on a local Iceberg table: compaction as one rewrite snapshot, conflicts,
snapshot expiry and orphan-file removal with a retention window."""

from __future__ import annotations

import glob
import os
import time
from collections import Counter

import pytest

from sinks.offline.catalog import OfflineTables
from sinks.offline.maintenance import (
    compact_table,
    expire_snapshots,
    plan_rewrites,
    referenced_files,
    remove_orphans,
    rewrite_files,
)
from sinks.offline.query_source import OfflineSource
from sinks.offline.table_commit import recorded_offsets
from tests.support.offline import HOUR_NS, T0, TOPIC, make_group, table_coordinates, write_small_files


@pytest.fixture
def env(tmp_path):
    tables = OfflineTables.open(f"sqlite:///{tmp_path / 'catalog.db'}", "fs")
    g = make_group(offline_uri=str(tmp_path / "offline" / "customers-1700000000"))
    expected = write_small_files(tables, g, partitions=2, batches=6, batch_size=40, hours=30)
    return tables, g, expected


def files_on_disk(g) -> set[str]:
    return set(glob.glob(f"{g.offline_uri}/data/**/*.parquet", recursive=True))


def live(tables, g) -> list:
    return [t.file for t in tables.existing(g).scan().plan_files()]


def test_compaction_is_one_snapshot_that_keeps_rows_and_offsets(env) -> None:
    tables, g, expected = env
    before = live(tables, g)
    offsets = recorded_offsets(tables.existing(g))
    snapshots = len(tables.existing(g).metadata.snapshots)
    before_id = tables.existing(g).current_snapshot().snapshot_id
    days = {repr(f.partition) for f in before}
    assert len(before) > len(days) >= 2  # many small files in a few days (30 hours from T0 spans 2)
    results = compact_table(lambda: tables.table(g), target_bytes=64 * 1024 * 1024)
    table = tables.existing(g)
    assert len(live(tables, g)) == len(days) and sum(r.inputs for r in results) == len(before)
    assert len(table.metadata.snapshots) == snapshots + len(results)  # one snapshot per rewritten day
    assert table_coordinates(tables, g) == expected
    assert recorded_offsets(table) == offsets  # carried over unchanged: resuming is unaffected
    assert table.current_snapshot().summary.operation.value == "overwrite"
    # time travel to before the compaction still reads the small files, and the same rows
    current = OfflineSource.from_group(g, tables)
    old = OfflineSource(g.name, g.record_identifier_name, g.event_time_name, current.schema, current.table, before_id)
    assert len(old.files()) == len(before) and len(current.files()) == len(days)
    assert old.rows().num_rows == current.rows().num_rows == sum(expected.values())
    assert plan_rewrites(table, 64 * 1024 * 1024) == []  # nothing left to do


def test_a_compaction_that_lost_the_race_drops_its_outputs(env) -> None:
    tables, g, expected = env
    groups = plan_rewrites(tables.existing(g), 64 * 1024 * 1024)
    first = groups[0]
    on_disk = files_on_disk(g)
    assert rewrite_files(lambda: tables.table(g), first) is not None  # the winner
    after_winner = files_on_disk(g)
    # the loser planned the same inputs; they are gone from the table now
    assert rewrite_files(lambda: tables.table(g), first) is None
    assert files_on_disk(g) == after_winner, "the loser's outputs are deleted"
    assert len(after_winner - on_disk) >= 1
    assert table_coordinates(tables, g) == expected


def test_expiry_then_orphan_removal_keep_the_window_and_the_current_rows(env) -> None:
    tables, g, expected = env
    compact_table(lambda: tables.table(g), target_bytes=64 * 1024 * 1024)
    table = tables.existing(g)
    on_disk = files_on_disk(g)
    inputs = on_disk - {f.file_path for f in live(tables, g)}
    assert inputs, "the compaction's inputs are still on disk (time travel needs them)"
    # within the window: nothing expires, nothing is removed
    assert expire_snapshots(table, retention_s=3600) == 0
    assert remove_orphans(tables.existing(g), None, older_than_s=3600) == []
    # the window has passed (as if an hour later): old snapshots expire, their files go
    later = time.time() + 7200
    from datetime import UTC, datetime

    assert expire_snapshots(table, retention_s=3600, now=datetime.fromtimestamp(later, UTC)) > 0
    table = tables.existing(g)
    assert len(table.metadata.snapshots) == 1
    gone = remove_orphans(table, None, older_than_s=3600, now=later)
    assert {p for p in gone if p.endswith(".parquet")} == inputs
    assert files_on_disk(g) == on_disk - inputs
    assert table_coordinates(tables, g) == expected
    assert all(not p.endswith(".metadata.json") or p not in referenced_files(table) for p in gone)


def test_an_uploaded_but_uncommitted_file_is_an_orphan_only_after_the_window(env) -> None:
    tables, g, _ = env
    from sinks.offline.table_files import write_data_files
    from sinks.offline.table_format import to_table_rows

    source = OfflineSource.from_group(g, tables)
    rows = to_table_rows(source.rows(upper_ns=T0 + HOUR_NS), g.event_time_name)
    stray = write_data_files(tables.table(g), rows)  # a crash right after the upload
    assert stray
    paths = {f.file_path for f in stray}
    assert remove_orphans(tables.existing(g), None, older_than_s=60) == []  # maybe a commit on its way
    gone = remove_orphans(tables.existing(g), None, older_than_s=60, now=time.time() + 120)
    assert paths <= set(gone) and not (paths & files_on_disk(g))
    assert table_coordinates(tables, g).total() == 2 * 6 * 40  # the table never held the stray rows


def test_orphan_removal_keeps_the_pre_iceberg_layout(env) -> None:
    """Files of the old layout at the table's location are no snapshot's, but until migrated they
    are the only copy of their rows: orphan removal must never delete them."""
    tables, g, _ = env
    root = tables.existing(g).location().removeprefix("file://")
    old = [f"{root}/data/year=2023/month=11/day=14/hour=22/fs.customers+00000+{0:020d}.parquet",
           f"{root}/_manifests/{'a' * 32}.json"]
    stray = f"{root}/data/stray.parquet"
    for path in (*old, stray):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as fh:
            fh.write(b"x")
    gone = remove_orphans(tables.existing(g), None, older_than_s=60, now=time.time() + 120)
    assert all(os.path.exists(p) for p in old) and not (set(old) & {p.removeprefix("file://") for p in gone})
    assert not os.path.exists(stray)


def test_offsets_are_recorded_per_partition(env) -> None:
    tables, g, expected = env
    assert recorded_offsets(tables.existing(g)) == {(TOPIC, 0): 240, (TOPIC, 1): 240}
    assert Counter(p for _, p, _ in expected) == {0: 240, 1: 240}


def test_engine_instructions_never_print_a_password() -> None:
    from sinks.offline.engine_ddl import engine_instructions, jdbc_url

    assert jdbc_url("sqlite:////var/lib/fs/catalog.db") == ("jdbc:sqlite:/var/lib/fs/catalog.db", None, False)
    assert jdbc_url("postgresql+psycopg2://fs:s3cret@db.example:5433/cat") == (
        "jdbc:postgresql://db.example:5433/cat", "fs", True)
    g = make_group(offline_uri="s3://b/offline/customers-1")
    text = engine_instructions(g, "fs", "postgresql+psycopg2://fs:s3cret@db.example:5433/cat")
    assert "s3cret" not in text and "jdbc.password=<password>" in text and "connection-user=fs" in text


class Snap:
    def __init__(self, sid: int, ts_ms: int) -> None:
        self.snapshot_id, self.timestamp_ms = sid, ts_ms


def test_expiry_keeps_the_last_hour_whole_and_one_snapshot_an_hour_before() -> None:
    from sinks.offline.maintenance import snapshots_to_expire

    h, m = 3_600_000, 60_000
    now = 100 * h
    snaps = [Snap(i, now - i * 10 * m) for i in range(1, 60)]  # one every 10 minutes, ~10 hours back
    snaps.append(Snap(999, now - 9 * 24 * h))                      # older than a 7-day window
    expired = set(snapshots_to_expire(snaps, current_id=1, now_ms=now, retention_s=7 * 86400, dense_s=3600))
    kept = [s for s in snaps if s.snapshot_id not in expired]
    assert 999 in expired
    assert {s.snapshot_id for s in kept if s.timestamp_ms >= now - h} == {1, 2, 3, 4, 5, 6}  # the last hour
    older = [s for s in kept if s.timestamp_ms < now - h]
    hours = [s.timestamp_ms // h for s in older]
    assert len(hours) == len(set(hours))  # one an hour...
    for s in older:  # ...the newest of its hour
        assert all(o.timestamp_ms <= s.timestamp_ms for o in snaps
                   if o.timestamp_ms // h == s.timestamp_ms // h and o.timestamp_ms < now - h)
    assert snapshots_to_expire([Snap(7, 0)], current_id=7, now_ms=now, retention_s=1) == []  # never the current


def test_time_travel_before_the_oldest_kept_snapshot_is_a_clear_error(env) -> None:
    from datetime import UTC, datetime

    from schemas.errors import ValidationError

    tables, g, _ = env
    first = tables.existing(g).metadata.snapshots[0].timestamp_ms / 1000
    expire_snapshots(tables.existing(g), retention_s=3600,
                     now=datetime.fromtimestamp(time.time() + 7200, UTC))
    with pytest.raises(ValidationError, match="before the oldest snapshot the table keeps"):
        OfflineSource.from_group(g, tables, as_of_commit=first)
    assert OfflineSource.from_group(g, tables, as_of_commit=time.time()).rows().num_rows == 2 * 6 * 40
