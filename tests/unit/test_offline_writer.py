"""OfflineWriter / PartitionWriter over a local Iceberg table: commits with offsets, refusals,
crashes between upload and commit, rotation, poison rows, exact nanosecond event times."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import pyarrow as pa
import pytest

from schemas.messages import PutMessage
from sinks.offline.catalog import OfflineTables
from sinks.offline.errors import (
    OfflineLayoutError,
    OfflineRowError,
    OfflineStorageError,
    OffsetsMismatchError,
)
from sinks.offline.query import OfflineQuery
from sinks.offline.rotation import RotationPolicy
from sinks.offline.table_commit import OFFSETS_PROPERTY, recorded_offsets
from sinks.offline.writer import OfflineWriter
from tests.support.offline import HOUR_NS, T0, delete, make_group, online_only, put, table_coordinates

TOPIC = "fs.customers"


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def msg(offset: int):
    ns = T0 + (offset % 3) * 9 * HOUR_NS + offset  # three day partitions, interleaved
    return delete(offset, ns) if offset % 11 == 0 else put(offset, ns)


@pytest.fixture
def env(tmp_path):
    tables = OfflineTables.open(f"sqlite:///{tmp_path / 'catalog.db'}", "fs")
    g = make_group(offline_uri=str(tmp_path / "offline" / "customers-1700000000"))
    return tables, g


def run_batch(writer: OfflineWriter, g, first: int, last: int, partition: int = 0):
    for o in range(first, last + 1):
        writer.add(g, msg(o), TOPIC, partition, o)
    return writer.flush(TOPIC, partition)


def data_files(g) -> list[str]:
    import glob

    return sorted(glob.glob(f"{g.offline_uri}/data/**/*.parquet", recursive=True))


def test_a_flush_commits_rows_and_offsets_in_one_snapshot(env) -> None:
    tables, g = env
    w = OfflineWriter(tables)
    result = run_batch(w, g, 0, 29)
    assert result.rows == 30 and result.next_offset == 30 and not result.rejected
    assert len(result.files) == 2  # two of the three day partitions... (offsets 0..29 touch days 0, 1)
    table = tables.existing(g)
    assert table.location().rstrip("/") == g.offline_uri
    assert recorded_offsets(table) == {(TOPIC, 0): 30}
    assert OFFSETS_PROPERTY in table.current_snapshot().summary.additional_properties
    assert [f.name for f in table.spec().fields] == ["event_time_day"]
    assert table.metadata.format_version == 2
    assert table_coordinates(tables, g) == Counter((TOPIC, 0, o) for o in range(30))
    # the next batch continues where the table says
    assert run_batch(w, g, 30, 40).next_offset == 41
    assert recorded_offsets(tables.existing(g)) == {(TOPIC, 0): 41}


def test_crash_after_upload_before_commit_leaves_no_row(env, monkeypatch) -> None:
    """Files uploaded, the process dies before the commit: the table holds none of their rows,
    a restarted writer resumes from the table and every offset ends up there once."""
    tables, g = env
    w = OfflineWriter(tables)
    assert run_batch(w, g, 0, 59).next_offset == 60

    class Crash(Exception):
        pass

    def die(stage: str) -> None:
        if stage == "after_upload":
            raise Crash(stage)

    dying = OfflineWriter(tables, stage_hook=die)
    assert dying.resume(g, TOPIC, 0) == 60
    with pytest.raises(Crash):
        run_batch(dying, g, 60, 99)
    assert len(data_files(g)) > 2  # the orphans are on disk...
    assert table_coordinates(tables, g) == Counter((TOPIC, 0, o) for o in range(60))  # ...not in the table
    w2 = OfflineWriter(tables)  # the restarted process
    assert w2.resume(g, TOPIC, 0) == 60
    run_batch(w2, g, 60, 130)
    assert table_coordinates(tables, g) == Counter((TOPIC, 0, o) for o in range(131))


def test_a_zombie_is_refused_and_its_files_deleted(env) -> None:
    """Two writers both believe they own the partition from offset 0: the first commit wins,
    the second is refused, uploads nothing into the table and resumes from the table."""
    tables, g = env
    a, b = OfflineWriter(tables), OfflineWriter(tables)
    assert a.resume(g, TOPIC, 0) is None and b.resume(g, TOPIC, 0) is None
    for o in range(50):
        a.add(g, msg(o), TOPIC, 0, o)
        b.add(g, msg(o), TOPIC, 0, o)
    assert a.flush(TOPIC, 0).next_offset == 50
    before = set(data_files(g))
    with pytest.raises(OffsetsMismatchError, match=r"fs.customers\[0\] starts at None but the table records 50"):
        b.flush(TOPIC, 0)
    assert set(data_files(g)) == before, "the refused commit's files are deleted"
    assert b.buffered_rows() == 0
    # b goes on from what the table records
    assert b.resume(g, TOPIC, 0) == 50
    run_batch(b, g, 50, 70)
    # and now a is the stale one
    with pytest.raises(OffsetsMismatchError, match="starts at 50 but the table records 71"):
        run_batch(a, g, 50, 60)
    assert table_coordinates(tables, g) == Counter((TOPIC, 0, o) for o in range(71))


def test_partitions_are_recorded_independently(env) -> None:
    tables, g = env
    w = OfflineWriter(tables)
    run_batch(w, g, 0, 9, partition=0)
    run_batch(w, g, 0, 4, partition=3)
    run_batch(w, g, 10, 19, partition=0)
    assert recorded_offsets(tables.existing(g)) == {(TOPIC, 0): 20, (TOPIC, 3): 5}
    assert OfflineWriter(tables).recorded(g, TOPIC) == {0: 20, 3: 5}


def test_nanosecond_event_times_survive_exactly(env) -> None:
    tables, g = env
    w = OfflineWriter(tables)
    times = [1_633_176_000_123_456_789, 1_633_176_000_123_456_788, -1, -1_000_000_000_123, 0, 9_000_000_000_000_000_001]
    for o, ns in enumerate(times):
        w.add(g, put(o, ns), TOPIC, 0, o)
    w.flush(TOPIC, 0)
    table = tables.existing(g)
    raw = table.scan().to_arrow()
    assert sorted(raw["_event_time_ns"].to_pylist()) == sorted(times)
    # engines see microseconds, floored (so a time before 1970 lands in its own day)
    us = dict(zip(raw["_event_time_ns"].to_pylist(), raw["event_time"].cast(pa.int64()).to_pylist(), strict=True))
    assert us[1_633_176_000_123_456_789] == 1_633_176_000_123_456 and us[-1] == -1
    with OfflineQuery([g], tables=tables) as q:
        got = q.sql("SELECT _kafka_offset AS o, epoch_ns(event_time) AS ns FROM customers ORDER BY o")
        assert q.sql("SELECT * FROM customers").schema.field("event_time").type == pa.timestamp("ns", "UTC")
    assert got["ns"].to_pylist() == times


def test_rotation_by_count_and_age_with_a_fake_clock(env) -> None:
    tables, g = env
    clock = FakeClock()
    w = OfflineWriter(tables, RotationPolicy(max_records=5, max_bytes=10**9, max_age_s=60), clock=clock)
    for o in range(4):
        w.add(g, msg(o), TOPIC, 0, o)
    w.add(g, msg(0), TOPIC, 1, 0)
    assert w.due() == []
    w.add(g, msg(4), TOPIC, 0, 4)
    assert w.due() == [(TOPIC, 0)]
    w.flush(TOPIC, 0)
    assert w.due() == []
    clock.now += 59.9
    assert w.due() == []
    clock.now += 0.1
    assert w.due() == [(TOPIC, 1)]


def test_rotation_by_estimated_bytes(env) -> None:
    tables, g = env
    w = OfflineWriter(tables, RotationPolicy(max_records=10**6, max_bytes=2_000, max_age_s=60))
    o = 0
    while not w.due():
        w.add(g, put(o, city="x" * 100), TOPIC, 0, o)
        o += 1
    assert 5 < o < 20


def test_messages_without_offline_target_only_advance_the_offset(env) -> None:
    tables, g = env
    clock = FakeClock()
    w = OfflineWriter(tables, RotationPolicy(max_age_s=1), clock=clock)
    assert w.add(g, online_only(0), TOPIC, 0, 0) is False
    assert w.add(g, put(1), TOPIC, 0, 1) is True
    assert w.add(g, online_only(2), TOPIC, 0, 2) is False
    r = w.flush(TOPIC, 0)
    assert r.rows == 1 and r.next_offset == 3
    clock.now += 5
    assert w.add(g, online_only(3), TOPIC, 0, 3) is False
    clock.now += 5
    assert w.due() == [(TOPIC, 0)], "offsets of skipped messages must get committed too"
    r = w.flush(TOPIC, 0)
    assert r.files == [] and r.rows == 0 and r.next_offset == 4
    assert recorded_offsets(tables.existing(g)) == {(TOPIC, 0): 4}  # an offsets-only snapshot
    assert w.flush(TOPIC, 0).next_offset is None
    assert w.flush("other", 9).next_offset is None


def test_offline_disabled_group_writes_nothing(env) -> None:
    tables, g = env
    off = replace(g, offline_enabled=False, offline_uri=None)
    w = OfflineWriter(tables)
    assert w.add(off, put(1), TOPIC, 0, 7) is False
    r = w.flush(TOPIC, 0)
    assert r.files == [] and r.next_offset is None
    assert tables.existing(g) is None


def test_poison_row_is_rejected_before_the_commit_and_the_rest_written(env) -> None:
    tables, g = env
    w = OfflineWriter(tables)
    w.add(g, put(0), TOPIC, 0, 0)
    w.add(g, put(1, score=float("nan")), TOPIC, 0, 1)
    w.add(g, put(2, age="old"), TOPIC, 0, 2)
    w.add(g, put(3), TOPIC, 0, 3)
    seen_before_commit = []
    r = w.flush(TOPIC, 0, before_commit=lambda rejected: seen_before_commit.extend(
        (item[3], tables.existing(g).current_snapshot() is None) for item, _ in rejected))
    assert r.rows == 2 and r.next_offset == 4
    assert sorted((item[3], err.feature) for item, err in r.rejected) == [(1, "score"), (2, "age")]
    assert sorted(seen_before_commit) == [(1, True), (2, True)]  # dead-lettered before any commit
    assert isinstance(r.rejected[0][1], OfflineRowError)
    assert table_coordinates(tables, g) == Counter({(TOPIC, 0, 0): 1, (TOPIC, 0, 3): 1})


def test_offsets_must_go_on_from_the_table_until_resume(env) -> None:
    tables, g = env
    w = OfflineWriter(tables)
    w.add(g, put(5), TOPIC, 0, 5)
    with pytest.raises(OfflineLayoutError, match=r"offset 5 of fs.customers\[0\] is not where.*resume"):
        w.add(g, put(5), TOPIC, 0, 5)
    w.flush(TOPIC, 0)
    with pytest.raises(OfflineLayoutError, match="not where this writer's batch goes on \\(6\\)"):
        w.add(g, put(3), TOPIC, 0, 3)
    w.discard(TOPIC, 0)
    assert w.resume(g, TOPIC, 0) == 6
    w.add(g, put(6), TOPIC, 0, 6)
    assert w.buffered_rows() == 1


@pytest.mark.parametrize(("args", "match"), [
    (("customers", put(1), TOPIC, 0, 1), "needs the message's FeatureGroup"),
    ((None, {"op": "put"}, TOPIC, 0, 1), "needs the message's FeatureGroup"),
    (("G", b"\xff\xfe", TOPIC, 0, 1), "needs a PutMessage or DeleteMessage"),
    (("G", put(1), "", 0, 1), "topic must be a non-empty"),
    (("G", put(1), TOPIC, -1, 1), "partition a non-negative"),
    (("G", put(1), TOPIC, 0, -1), "offset must be a non-negative"),
    (("G", put(1), TOPIC, 0, "1"), "offset must be a non-negative"),
])
def test_bad_arguments(env, args, match) -> None:
    tables, g = env
    args = tuple(g if a == "G" else a for a in args)
    with pytest.raises(OfflineLayoutError, match=match):
        OfflineWriter(tables).add(*args)


def test_unknown_group_on_a_known_topic(env) -> None:
    tables, g = env
    w = OfflineWriter(tables)
    w.add(g, put(1), TOPIC, 0, 1)
    with pytest.raises(OfflineLayoutError, match="carries feature group 'customers'.*'orders'"):
        w.add(make_group("orders"), put(2), TOPIC, 0, 2)


@pytest.mark.parametrize("ns", [2**70, -(2**70), 1.0e18])
def test_event_time_outside_the_calendar(env, ns) -> None:
    tables, g = env
    m = PutMessage(id="c-1", event_time_ns=ns, record={"customer_id": "c-1"})
    with pytest.raises(OfflineRowError, match="event_time_ns"):
        OfflineWriter(tables).add(g, m, TOPIC, 0, 1)


def test_failed_upload_keeps_the_buffer_and_a_retry_commits_once(env, tmp_path) -> None:
    tables, g = env
    blocker = tmp_path / "blocked"
    blocker.write_text("a file where the table directory should be")
    gb = replace(g, offline_uri=str(blocker / "customers-1"))
    w = OfflineWriter(tables)
    for o in range(10):
        w.add(gb, msg(o), TOPIC, 0, o)
    with pytest.raises((OfflineStorageError, OSError)):
        w.flush(TOPIC, 0)
    assert w.buffered_rows() == 10
    blocker.unlink()
    r = w.flush(TOPIC, 0)
    assert r.rows == 10 and r.next_offset == 10
    assert table_coordinates(tables, gb) == Counter((TOPIC, 0, o) for o in range(10))


def test_newer_group_version_adds_columns(env) -> None:
    tables, g = env
    from schemas.types import FeatureDefinition

    g2 = g.with_added_features([FeatureDefinition("segment", "String")])
    w = OfflineWriter(tables)
    w.add(g, put(0), TOPIC, 0, 0)
    w.flush(TOPIC, 0)
    w.add(g2, put(1, segment="gold"), TOPIC, 0, 1)
    w.flush(TOPIC, 0)
    with OfflineQuery([g2], tables=tables) as q:
        t = q.sql("SELECT segment FROM customers ORDER BY _kafka_offset")
    assert t["segment"].to_pylist() == [None, "gold"]


def test_partitions_at_different_group_versions_commit_together(env) -> None:
    """A feature added while the sink runs: one partition's writer has seen the new version, another
    only the old one, and both flush in one snapshot. Their rows share the newest definition (the older
    rows get nulls) instead of crashing the concatenation on two schemas (found by the acknowledged
    writes test: ArrowInvalid "Schema at index 1 was different" killed the sink, and each restart would
    have met the same batch)."""
    tables, g = env
    from schemas.types import FeatureDefinition

    g2 = g.with_added_features([FeatureDefinition("segment", "String")])
    w = OfflineWriter(tables)
    w.add(g, put(0), TOPIC, 0, 0)
    w.add(g2, put(1, segment="gold"), TOPIC, 1, 0)
    w.add(g, put(2), TOPIC, 2, 0)
    results = w.flush_many([(TOPIC, 0), (TOPIC, 1), (TOPIC, 2)])
    assert {k: r.rows for k, r in results.items()} == {(TOPIC, 0): 1, (TOPIC, 1): 1, (TOPIC, 2): 1}
    assert recorded_offsets(tables.existing(g2)) == {(TOPIC, 0): 1, (TOPIC, 1): 1, (TOPIC, 2): 1}
    with OfflineQuery([g2], tables=tables) as q:
        t = q.sql("SELECT _kafka_partition, segment FROM customers ORDER BY _kafka_partition")
    assert t["segment"].to_pylist() == [None, "gold", None]


def test_time_travel_by_commit(env) -> None:
    import time as _time

    from sinks.offline.query_source import OfflineSource

    tables, g = env
    w = OfflineWriter(tables)
    before_any = _time.time()
    _time.sleep(0.01)
    run_batch(w, g, 0, 9)
    _time.sleep(0.01)
    between = _time.time()
    _time.sleep(0.01)
    run_batch(w, g, 10, 29)
    with OfflineQuery([g], tables=tables, as_of_commit=between) as q:
        assert q.sql("SELECT count(*) AS n FROM customers")["n"].to_pylist() == [10]
    with OfflineQuery([g], tables=tables) as q:
        assert q.sql("SELECT count(*) AS n FROM customers")["n"].to_pylist() == [30]
    assert OfflineSource.from_group(g, tables, as_of_commit=before_any).rows().num_rows == 0
    from datetime import UTC, datetime

    iso = datetime.fromtimestamp(between, UTC).isoformat()
    assert OfflineSource.from_group(g, tables, as_of_commit=iso).rows().num_rows == 10
    from schemas.errors import ValidationError

    with pytest.raises(ValidationError, match="as_of_commit 'yesterday' is not a time"):
        OfflineSource.from_group(g, tables, as_of_commit="yesterday")
