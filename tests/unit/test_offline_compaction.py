"""Compaction and the catalog on a local directory: crash at every step, recover, eligibility."""

from __future__ import annotations

import json

import pytest

from sinks.offline import compaction, layout
from sinks.offline.catalog import list_live_files, read_manifests, snapshot
from sinks.offline.compaction import STEPS, FileInfo, compact_hour, compact_table, plan_bins, recover
from sinks.offline.errors import CompactionCrash, OfflineLayoutError
from sinks.offline.fs import open_filesystem
from tests.support.offline import (
    TOPIC,
    file_stats,
    live_coordinates,
    print_stats,
    write_small_files,
)

EVERYTHING = {(TOPIC, 0): 10**12, (TOPIC, 1): 10**12}


@pytest.fixture
def table(tmp_path):
    fs, root = open_filesystem(str(tmp_path / "offline"))
    path, expected, committed = write_small_files(fs, root)
    return fs, path, expected, committed


def crash_at(step: str):
    def hook(name: str) -> None:
        if name == step:
            raise CompactionCrash(f"injected crash after {name}")
    return hook


def test_compaction_merges_each_hour_and_keeps_every_row_once(table) -> None:
    fs, path, expected, committed = table
    before = file_stats(fs, path)
    results = compact_table(fs, path, committed)
    after = file_stats(fs, path)
    print_stats("before", before)
    print_stats("after", after)
    assert {h: len(s) for h, s in before.items()} == {h: 12 for h in before}
    assert {h: len(s) for h, s in after.items()} == {h: 1 for h in before}
    assert sum(r.rows for r in results) == sum(expected.values())
    assert live_coordinates(fs, path) == expected
    assert all(layout.compaction_id_of(p) for p in list_live_files(fs, path))
    # inputs are gone from storage, not only hidden
    assert len([p for p in fs.find(path) if p.endswith(".parquet")]) == 2


@pytest.mark.parametrize("step", STEPS)
def test_crash_after_each_step_never_shows_a_duplicate_or_a_gap(table, step: str) -> None:
    fs, path, expected, committed = table
    with pytest.raises(CompactionCrash):
        compact_table(fs, path, committed, hook=crash_at(step))
    assert live_coordinates(fs, path) == expected          # readers right away, before recovery
    recover(fs, path)
    assert live_coordinates(fs, path) == expected
    assert not [p for p in fs.find(path) if layout.compaction_id_of(p) and p not in list_live_files(fs, path)]
    compact_table(fs, path, committed)
    assert live_coordinates(fs, path) == expected
    assert all(len(s) == 1 for s in file_stats(fs, path).values())


def test_crash_half_way_through_deleting_inputs(table, monkeypatch) -> None:
    fs, path, expected, committed = table
    real = compaction.delete_quietly_missing

    def delete_one_then_die(fs_, paths):
        real(fs_, paths[:1])
        if len(paths) > 1:
            raise CompactionCrash("died after deleting one input")

    monkeypatch.setattr(compaction, "delete_quietly_missing", delete_one_then_die)
    with pytest.raises(CompactionCrash):
        compact_table(fs, path, committed)
    monkeypatch.setattr(compaction, "delete_quietly_missing", real)
    assert live_coordinates(fs, path) == expected
    recover(fs, path)
    assert live_coordinates(fs, path) == expected


def test_uncommitted_files_are_not_compacted(table) -> None:
    fs, path, expected, committed = table
    # partition 0 committed only up to its 3rd batch; partition 1 not at all
    partial = {(TOPIC, 0): 120}
    results = compact_table(fs, path, partial)
    for r in results:
        for p in r.inputs:
            name = layout.parse_data_file_name(p)
            assert name is not None and name.partition == 0 and name.first_offset < 120
    assert results and live_coordinates(fs, path) == expected


def test_second_compaction_merges_outputs_and_retires_old_manifests(tmp_path) -> None:
    fs, root = open_filesystem(str(tmp_path / "offline"))
    path, expected, committed = write_small_files(fs, root, batches=3)
    compact_table(fs, path, committed)
    assert len(read_manifests(fs, path)) == 2
    _, more, committed = write_small_files(fs, root, batches=3, start=1000)
    compact_table(fs, path, committed)
    assert live_coordinates(fs, path) == expected + more
    assert len(read_manifests(fs, path)) == 2, "manifests of merged-away outputs must be retired"
    assert all(len(s) == 1 for s in file_stats(fs, path).values())


def test_grace_period_keeps_inputs_hidden_until_recover(table) -> None:
    fs, path, expected, committed = table
    compact_table(fs, path, committed, input_grace_s=3600)
    n_files = len([p for p in fs.find(path) if p.endswith(".parquet")])
    assert n_files == 26                   # 24 inputs still there for slow readers, 2 outputs
    assert len(list_live_files(fs, path)) == 2
    assert live_coordinates(fs, path) == expected
    assert recover(fs, path, input_grace_s=3600)["manifests_retired"] == 0
    recover(fs, path, input_grace_s=0)
    assert len([p for p in fs.find(path) if p.endswith(".parquet")]) == 2
    assert live_coordinates(fs, path) == expected


def test_target_size_splits_bins(table) -> None:
    fs, path, expected, committed = table
    sizes = [s for ss in file_stats(fs, path).values() for s in ss]
    compact_table(fs, path, committed, target_bytes=max(sizes) * 4)
    counts = [len(s) for s in file_stats(fs, path).values()]
    assert all(3 <= c <= 6 for c in counts), counts
    assert live_coordinates(fs, path) == expected


def test_plan_bins_is_greedy_in_offset_order() -> None:
    f = [FileInfo(f"/h/t+00000+{i:020d}.parquet", s, 1, "t", 0, i) for i, s in enumerate([40, 40, 40, 200, 10, 10])]
    bins = plan_bins(f, 100)
    assert [[x.last_offset for x in b] for b in bins] == [[0, 1], [2, 4, 5]]
    assert plan_bins(f[:1], 100) == []
    assert plan_bins([], 100) == []


def test_garbage_manifest_is_reported(table) -> None:
    fs, path, *_ = table
    fs.pipe_file(f"{path}/_manifests/{'0' * 32}.json", b"\x00\xffnot json")
    with pytest.raises(OfflineLayoutError, match="is not a featurestream manifest"):
        list_live_files(fs, path)


@pytest.mark.parametrize("doc", [{"format": 1}, {"format": 2, "id": "x"}, [1, 2],
                                 {"format": 1, "id": "a" * 32, "output": "data/h/compacted-" + "b" * 32 +
                                  ".parquet", "inputs": ["x"], "rows": 1, "committed_at_ns": 0}])
def test_malformed_manifests(table, doc) -> None:
    fs, path, *_ = table
    fs.pipe_file(f"{path}/_manifests/{'c' * 32}.json", json.dumps(doc).encode())
    with pytest.raises(OfflineLayoutError, match="manifest"):
        snapshot(fs, path)


def test_foreign_parquet_file_in_the_data_folder_stops_compaction(table) -> None:
    fs, path, expected, committed = table
    hour = next(iter(file_stats(fs, path)))
    fs.pipe_file(f"{path}/data/{hour}/export.parquet", fs.cat_file(list_live_files(fs, path)[0]))
    with pytest.raises(OfflineLayoutError, match="export.parquet.*not a featurestream file"):
        compact_hour(fs, path, hour, committed)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"committed": [1, 2]}, "committed must map"), ({"target_bytes": 0}, "target_bytes"),
    ({"target_bytes": "128MB"}, "target_bytes"),
])
def test_bad_compaction_arguments(table, kwargs, match) -> None:
    fs, path, _, committed = table
    args = {"committed": committed, **kwargs}
    with pytest.raises(OfflineLayoutError, match=match):
        compact_hour(fs, path, "year=2023/month=11/day=14/hour=22", args.pop("committed"), **args)


def test_empty_or_missing_table(tmp_path) -> None:
    fs, root = open_filesystem(str(tmp_path / "nothing"))
    assert list_live_files(fs, f"{root}/g-1") == []
    assert compact_table(fs, f"{root}/g-1", {}) == []
    assert recover(fs, f"{root}/g-1") == {"orphans_deleted": 0, "manifests_retired": 0}
    with pytest.raises(OfflineLayoutError, match="table URI"):
        list_live_files(fs, "")
