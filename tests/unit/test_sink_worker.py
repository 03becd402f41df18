"""The offline sink's wiring without servers: routing into the writer on a local path, poison,
the replay filter (what is already there is skipped) and the CLI's flag checks."""

from __future__ import annotations

import argparse
from collections import Counter

import numpy as np
import orjson
import pytest

from featurestream.cli import CliError, build_parser
from featurestream.cli.sink_cmds import settings_from_args
from schemas.messages import ONLINE
from schemas.wire import encode
from sinks.offline.fs import open_filesystem, write_atomic
from sinks.offline.writer import OfflineWriter, table_path_for
from streams.group_view import GroupView
from streams.offline.applier import OfflineApplier
from streams.offline.compactor import retire_empty_manifests
from streams.replay import not_yet_written, present_offsets
from streams.route import RawMessage
from tests.support.offline import T0, delete, live_coordinates, make_group, put

PREFIX = "fs"
G = make_group("customers")
TOPIC = f"{PREFIX}.customers"


def raw(offset: int, msg=None, *, topic: str = TOPIC, partition: int = 0, value: bytes | None = None) -> RawMessage:
    if value is not None:
        return RawMessage(topic, partition, offset, b"k", value, [("fs-format", b"json/1")])
    key, val, headers = encode(msg or put(offset, T0))
    return RawMessage(topic, partition, offset, key, val, headers)


@pytest.fixture
def applier(tmp_path):
    fs, root = open_filesystem(str(tmp_path / "offline"))
    return OfflineApplier(GroupView(lambda: {"customers": G}), OfflineWriter(fs, root), None, PREFIX)


def test_rows_go_to_the_writer_and_poison_is_counted(applier) -> None:
    bad_schema = orjson.dumps({"op": "put", "id": "c9", "event_time_ns": 1, "record": {"customer_id": "c9",
                                                                                          "age": "old"}})
    batch = [raw(0), raw(1, delete(1, T0)), raw(2, value=b"\xff garbage"), raw(3, value=bad_schema),
             raw(4, value=b"{}", topic=f"{PREFIX}.ghost"), raw(5, value=b'{"op": "put"}'), raw(6)]
    applier.add(batch)
    assert applier.poison_count == 4
    assert applier.holds(TOPIC, 0) and not applier.holds(f"{PREFIX}.ghost", 0)
    result = applier.flush(TOPIC, 0)
    assert result.rows == 3 and result.next_offset == 7 and not applier.holds(TOPIC, 0)
    table = table_path_for(applier.writer.fs, applier.writer.root_path, G)
    assert live_coordinates(applier.writer.fs, table) == Counter((TOPIC, 0, o) for o in (0, 1, 6))


def test_offline_disabled_and_online_only_records_are_skipped(tmp_path) -> None:
    fs, root = open_filesystem(str(tmp_path / "offline"))
    off = make_group("customers", offline_enabled=False)
    a = OfflineApplier(GroupView(lambda: {"customers": off}), OfflineWriter(fs, root), None, PREFIX)
    online = frozenset({ONLINE})
    a.add([raw(0, put(0, T0, stores=online)), raw(1, put(1, T0, stores=online))])
    assert not a.holds(TOPIC, 0) and a.poison_count == 0
    b = OfflineApplier(GroupView(lambda: {"customers": G}), OfflineWriter(fs, root), None, PREFIX)
    b.add([raw(0, put(0, T0, stores=online))])  # offline on, but this record targets only online
    assert not b.holds(TOPIC, 0) and b.poison_count == 0


def test_unknown_group_forces_one_registry_refresh(tmp_path) -> None:
    fs, root = open_filesystem(str(tmp_path / "offline"))
    answers = iter([{}, {"customers": G}])  # the view's first load, then the forced one
    calls = []

    def load():
        calls.append(1)
        return next(answers)

    a = OfflineApplier(GroupView(load), OfflineWriter(fs, root), None, PREFIX)
    a.add([raw(0)])
    assert len(calls) == 2 and a.holds(TOPIC, 0) and a.poison_count == 0


def test_replay_filter_skips_present_and_uncommitted_offsets() -> None:
    counts = {"present": 0, "left": 0}
    batch = [raw(o, partition=p) for p in (0, 1) for o in range(6)]
    committed = {(TOPIC, 0): 4, (TOPIC, 1): 6}
    present = {0: np.array([0, 2]), 1: np.array([], dtype=np.int64)}
    todo = not_yet_written(batch, committed, present, counts)
    assert [(r.partition, r.offset) for r in todo] == [(0, 1), (0, 3)] + [(1, o) for o in range(6)]
    assert counts == {"present": 2, "left": 2}
    counts = {"present": 0, "left": 0}
    assert not_yet_written(batch, {}, {}, counts) == [] and counts["left"] == 12  # no sink commit: all left to it


def test_present_offsets_reads_the_live_table(applier) -> None:
    table = table_path_for(applier.writer.fs, applier.writer.root_path, G)
    assert present_offsets(applier.writer.fs, table, TOPIC) == {}
    applier.add([raw(o, partition=p) for p in (0, 2) for o in range(3)])
    applier.flush(TOPIC, 0)
    applier.flush(TOPIC, 2)
    got = present_offsets(applier.writer.fs, table, TOPIC)
    assert {p: a.tolist() for p, a in got.items()} == {0: [0, 1, 2], 2: [0, 1, 2]}
    assert present_offsets(applier.writer.fs, table, "other.topic") == {}


def test_empty_manifests_are_retired_but_live_ones_kept(applier) -> None:
    from sinks.offline import layout
    from sinks.offline.catalog import Manifest, read_manifests

    fs = applier.writer.fs
    table = table_path_for(fs, applier.writer.root_path, G)
    applier.add([raw(0)])
    applier.flush(TOPIC, 0)
    live = layout.data_root(table)
    kept_input = [p for p in fs.find(live)][0][len(table) + 1:]
    hour = layout.hour_partition_of(kept_input)
    for cid, inputs in (("a" * 32, (f"data/{hour}/gone.parquet",)), ("b" * 32, (kept_input,))):
        m = Manifest(cid, f"data/{hour}/compacted-{cid}.parquet", inputs, 1, 0)
        write_atomic(fs, layout.manifest_path(table, cid), m.to_json())
    assert retire_empty_manifests(fs, table) == 1
    assert set(read_manifests(fs, table)) == {"b" * 32}


@pytest.mark.parametrize("flags, message", [
    (["--max-records", "0"], "--max-records"),
    (["--max-bytes", "-5"], "--max-bytes"),
    (["--max-age-s", "nan"], "--max-age-s"),
    (["--max-age-s", "inf"], "--max-age-s"),
    (["--compact-every-s", "-1"], "--compact-every-s"),
    (["--input-grace-s", "nan"], "--input-grace-s"),
    (["--target-file-mb", "0"], "--target-file-mb"),
    (["--target-file-mb", "1e12"], "--target-file-mb"),
])
def test_bad_flags_are_usage_errors_naming_the_flag(flags, message) -> None:
    args = build_parser().parse_args(["sink", *flags])
    with pytest.raises(CliError, match=message) as info:
        settings_from_args(args)
    assert info.value.status == 2


def test_non_numeric_flag_is_rejected_by_argparse(capsys) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["sink", "--max-records", "many"])
    assert "--max-records" in capsys.readouterr().err


def test_defaults_make_rows_queryable_within_a_minute() -> None:
    s = settings_from_args(build_parser().parse_args(["sink"]))
    assert s.policy.max_age_s == 60 and s.target_bytes == 128 * 1024 * 1024
    assert isinstance(build_parser().parse_args(["sink"]), argparse.Namespace)
