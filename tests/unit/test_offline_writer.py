"""OfflineWriter / PartitionWriter on a local directory: files, rotation, exactly-once redelivery."""

from __future__ import annotations

import os
from collections import Counter

import pyarrow.parquet as pq
import pytest

from sinks.offline import layout
from sinks.offline.catalog import list_live_files
from sinks.offline.errors import OfflineLayoutError, OfflineRowError, OfflineStorageError
from sinks.offline.fs import open_filesystem
from sinks.offline.rotation import RotationPolicy
from sinks.offline.writer import OfflineWriter, table_path_for
from tests.support.offline import (
    HOUR_NS,
    T0,
    delete,
    live_coordinates,
    make_group,
    online_only,
    put,
)

TOPIC = "fs.customers"
G = make_group()


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def hour_of(offset: int) -> int:
    """Event time of the message at ``offset``: spread over 3 hours, interleaved, plus a
    4th hour that only offsets 85-90 use (an hour a short redelivery does not reach)."""
    if 85 <= offset <= 90:
        return T0 + 3 * HOUR_NS + offset
    return T0 + (offset % 3) * HOUR_NS + offset


def msg(offset: int):
    return delete(offset, hour_of(offset)) if offset % 11 == 0 else put(offset, hour_of(offset))


@pytest.fixture
def store(tmp_path):
    fs, root = open_filesystem(str(tmp_path / "offline"))
    return fs, root, table_path_for(fs, root, G)


def run_batch(writer: OfflineWriter, first: int, last: int, partition: int = 0):
    for o in range(first, last + 1):
        writer.add(G, msg(o), TOPIC, partition, o)
    return writer.flush(TOPIC, partition)


def test_flush_writes_one_file_per_hour_named_by_first_offset(store) -> None:
    fs, root, table = store
    w = OfflineWriter(fs, root)
    result = run_batch(w, 0, 29)
    assert result.rows == 30 and result.next_offset == 30 and not result.rejected
    assert len(result.files) == 3
    assert table == f"{root}/customers-1700000000"
    for path in result.files:
        name = layout.parse_data_file_name(path)
        assert name is not None and name.topic == TOPIC and name.partition == 0
        md = pq.read_metadata(path).metadata
        first, last = int(md[layout.META_FIRST]), int(md[layout.META_LAST])
        assert first == name.first_offset and first in (0, 1, 2) and last in (27, 28, 29)
        t = pq.read_table(path)
        assert t["_kafka_offset"].to_pylist()[0] == first
    assert sorted(list_live_files(fs, table)) == sorted(result.files)
    assert live_coordinates(fs, table) == Counter((TOPIC, 0, o) for o in range(30))
    assert not [f for f in fs.find(table) if "/." in f], "no temp files may be left"


@pytest.mark.parametrize("redelivery_ends", [60, 72, 84, 88, 99, 130])
def test_crash_before_commit_then_redelivery_with_other_rotation_point(store, redelivery_ends: int) -> None:
    """Files of batch 60..99 written, crash before commit; redelivery from 60 rotates elsewhere."""
    fs, root, table = store
    w = OfflineWriter(fs, root)
    committed = run_batch(w, 0, 59).next_offset
    assert committed == 60
    stale = run_batch(w, 60, 99)                    # written, never committed: crash
    assert stale.files
    w2 = OfflineWriter(fs, root)                    # the restarted process, resumes at 60
    r = run_batch(w2, committed, redelivery_ends)
    committed = r.next_offset
    end = max(131, redelivery_ends + 1)
    run_batch(w2, committed, end - 1)
    coords = live_coordinates(fs, table)
    assert coords == Counter((TOPIC, 0, o) for o in range(end)), \
        f"duplicates: {[c for c, n in coords.items() if n > 1][:5]}, missing: " \
        f"{sorted(set(range(end)) - {c[2] for c in coords})[:5]}"


def test_two_crashes_in_a_row(store) -> None:
    fs, root, table = store
    run_batch(OfflineWriter(fs, root), 0, 120)             # crash 1: nothing committed
    run_batch(OfflineWriter(fs, root), 0, 50)              # crash 2: nothing committed
    w = OfflineWriter(fs, root)
    c = run_batch(w, 0, 86).next_offset                     # good run, other boundaries
    c = run_batch(w, c, 95).next_offset
    run_batch(w, c, 140)
    assert live_coordinates(fs, table) == Counter((TOPIC, 0, o) for o in range(141))


def test_name_with_last_offset_would_duplicate(store, monkeypatch) -> None:
    """The same scenario with the last offset in the file name leaves stale files: duplicates.
    Proves the redelivery tests above can fail, and why the name is first-offset only."""
    fs, root, table = store
    from sinks.offline import partition_writer

    real = layout.data_file_path

    def with_last(table_path, hour, topic, partition, first):
        return real(table_path, hour, topic, partition, first).replace(".parquet", f"+{with_last.last}.parquet")

    with_last.last = 0

    def fake_path(table_path, hour, topic, partition, first):
        with_last.last += 1  # any name that differs between attempts
        return with_last(table_path, hour, topic, partition, first)

    monkeypatch.setattr(partition_writer.layout, "data_file_path", fake_path)
    monkeypatch.setattr(layout, "parse_data_file_name", lambda name: None)
    run_batch(OfflineWriter(fs, root), 0, 99)
    run_batch(OfflineWriter(fs, root), 0, 99)
    coords = live_coordinates(fs, table)
    assert max(coords.values()) == 2


def test_rotation_by_count_and_age_with_a_fake_clock(store) -> None:
    fs, root, _ = store
    clock = FakeClock()
    w = OfflineWriter(fs, root, RotationPolicy(max_records=5, max_bytes=10**9, max_age_s=60), clock=clock)
    for o in range(4):
        w.add(G, msg(o), TOPIC, 0, o)
    w.add(G, msg(0), TOPIC, 1, 0)
    assert w.due() == []
    w.add(G, msg(4), TOPIC, 0, 4)
    assert w.due() == [(TOPIC, 0)]
    w.flush(TOPIC, 0)
    assert w.due() == []
    clock.now += 59.9
    assert w.due() == []
    clock.now += 0.1
    assert w.due() == [(TOPIC, 1)]


def test_rotation_by_estimated_bytes(store) -> None:
    fs, root, _ = store
    w = OfflineWriter(fs, root, RotationPolicy(max_records=10**6, max_bytes=2_000, max_age_s=60))
    o = 0
    while not w.due():
        w.add(G, put(o, city="x" * 100), TOPIC, 0, o)
        o += 1
    assert 5 < o < 20


def test_messages_without_offline_target_only_advance_the_offset(store) -> None:
    fs, root, table = store
    clock = FakeClock()
    w = OfflineWriter(fs, root, RotationPolicy(max_age_s=1), clock=clock)
    assert w.add(G, online_only(0), TOPIC, 0, 0) is False
    assert w.add(G, put(1), TOPIC, 0, 1) is True
    assert w.add(G, online_only(2), TOPIC, 0, 2) is False
    r = w.flush(TOPIC, 0)
    assert r.rows == 1 and r.next_offset == 3
    clock.now += 5
    assert w.add(G, online_only(3), TOPIC, 0, 3) is False
    clock.now += 5
    assert w.due() == [(TOPIC, 0)], "offsets of skipped messages must get committed too"
    r = w.flush(TOPIC, 0)
    assert r.files == [] and r.rows == 0 and r.next_offset == 4
    assert w.flush(TOPIC, 0).next_offset is None
    assert w.flush("other", 9).next_offset is None


def test_offline_disabled_group_writes_nothing(store) -> None:
    fs, root, _ = store
    g = make_group(offline_enabled=False)
    w = OfflineWriter(fs, root)
    assert w.add(g, put(1), TOPIC, 0, 7) is False
    r = w.flush(TOPIC, 0)
    assert r.files == [] and r.next_offset == 8


def test_poison_row_is_rejected_and_the_rest_written(store) -> None:
    fs, root, table = store
    w = OfflineWriter(fs, root)
    w.add(G, put(0), TOPIC, 0, 0)
    w.add(G, put(1, score=float("nan")), TOPIC, 0, 1)
    w.add(G, put(2, age="old"), TOPIC, 0, 2)
    w.add(G, put(3), TOPIC, 0, 3)
    r = w.flush(TOPIC, 0)
    assert r.rows == 2 and r.next_offset == 4
    assert sorted((item[3], err.feature) for item, err in r.rejected) == [(1, "score"), (2, "age")]
    assert isinstance(r.rejected[0][1], OfflineRowError)
    assert live_coordinates(fs, table) == Counter({(TOPIC, 0, 0): 1, (TOPIC, 0, 3): 1})


def test_offsets_must_increase_until_discard(store) -> None:
    fs, root, _ = store
    w = OfflineWriter(fs, root)
    w.add(G, put(5), TOPIC, 0, 5)
    with pytest.raises(OfflineLayoutError, match="offset 5 of fs.customers\\[0\\] is not after.*discard"):
        w.add(G, put(5), TOPIC, 0, 5)
    w.flush(TOPIC, 0)
    with pytest.raises(OfflineLayoutError, match="not after"):
        w.add(G, put(3), TOPIC, 0, 3)
    w.discard(TOPIC, 0)
    w.add(G, put(3), TOPIC, 0, 3)
    assert w.buffered_rows() == 1


@pytest.mark.parametrize(("args", "match"), [
    (("customers", put(1), TOPIC, 0, 1), "needs the message's FeatureGroup"),
    ((G, {"op": "put"}, TOPIC, 0, 1), "needs a PutMessage or DeleteMessage"),
    ((G, b"\xff\xfe", TOPIC, 0, 1), "needs a PutMessage or DeleteMessage"),
    ((G, put(1), "", 0, 1), "topic must be a non-empty"),
    ((G, put(1), TOPIC, -1, 1), "partition a non-negative"),
    ((G, put(1), TOPIC, 0, -1), "offset must be a non-negative"),
    ((G, put(1), TOPIC, 0, "1"), "offset must be a non-negative"),
])
def test_bad_arguments(store, args, match) -> None:
    fs, root, _ = store
    with pytest.raises(OfflineLayoutError, match=match):
        OfflineWriter(fs, root).add(*args)


def test_unknown_group_on_a_known_topic(store) -> None:
    fs, root, _ = store
    w = OfflineWriter(fs, root)
    w.add(G, put(1), TOPIC, 0, 1)
    with pytest.raises(OfflineLayoutError, match="carries feature group 'customers'.*'orders'"):
        w.add(make_group("orders"), put(2), TOPIC, 0, 2)


@pytest.mark.parametrize("ns", [2**70, -(2**70), 1.0e18])
def test_event_time_outside_the_calendar(store, ns) -> None:
    fs, root, _ = store
    from schemas.messages import PutMessage

    m = PutMessage(id="c-1", event_time_ns=ns, record={"customer_id": "c-1"})
    with pytest.raises(OfflineRowError, match="event_time_ns"):
        OfflineWriter(fs, root).add(G, m, TOPIC, 0, 1)


def test_failed_write_keeps_the_buffer_and_a_retry_is_idempotent(tmp_path) -> None:
    blocker = tmp_path / "offline"
    blocker.write_text("a file where the table directory should be")
    fs, root = open_filesystem(str(blocker))
    w = OfflineWriter(fs, root)
    for o in range(10):
        w.add(G, msg(o), TOPIC, 0, o)
    with pytest.raises(OfflineStorageError, match="cannot write"):
        w.flush(TOPIC, 0)
    assert w.buffered_rows() == 10
    os.unlink(blocker)
    r = w.flush(TOPIC, 0)
    assert r.rows == 10 and r.next_offset == 10
    assert live_coordinates(fs, table_path_for(fs, root, G)) == Counter((TOPIC, 0, o) for o in range(10))


def test_newer_group_version_adds_columns(store) -> None:
    fs, root, table = store
    from schemas.types import FeatureDefinition

    g2 = G.with_added_features([FeatureDefinition("segment", "String")])
    w = OfflineWriter(fs, root)
    w.add(G, put(0), TOPIC, 0, 0)
    w.add(g2, put(1, segment="gold"), TOPIC, 0, 1)
    r = w.flush(TOPIC, 0)
    t = pq.read_table(r.files[0])
    assert t["segment"].to_pylist() == [None, "gold"]
