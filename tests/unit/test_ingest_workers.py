"""How many worker processes ingest uses, and what it pickles to them."""

from __future__ import annotations

import gc
import pickle

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from streams import ingest as ingest_module
from streams.rowsource import compact_part, iter_parts


class _FileLike:
    """Stands for streams.datafiles.FileRows: a source that yields its own parts."""

    def iter_parts(self, chunk_size: int):  # pragma: no cover - never iterated here
        return iter(())


def _cores(monkeypatch, n: int) -> None:
    monkeypatch.setattr(ingest_module.os, "cpu_count", lambda: n)


@pytest.mark.parametrize("data", [pd.DataFrame({"a": [1]}), pa.table({"a": [1]}), [{"a": 1}]],
                         ids=["dataframe", "arrow", "dicts"])
def test_rows_in_memory_are_encoded_in_this_process_on_two_cores(monkeypatch, data):
    _cores(monkeypatch, 2)
    assert ingest_module._choose_workers(None, 200_000, data) == 1


def test_files_keep_the_pool_on_two_cores(monkeypatch):
    _cores(monkeypatch, 2)
    assert ingest_module._choose_workers(None, 200_000, _FileLike()) == 2
    assert ingest_module._choose_workers(None, None, _FileLike()) == 2


def test_a_parquet_file_is_encoded_in_this_process_on_two_cores_and_text_files_keep_the_pool(monkeypatch, tmp_path):
    import pyarrow.parquet as pq

    from streams.datafiles.rows import FileRows
    from tests.integration.helpers import customers_group

    group = customers_group("workers")
    names = [f.name for f in group.features]
    pq.write_table(pa.table({n: pa.array([], pa.string()) for n in names}), tmp_path / "rows.parquet")
    (tmp_path / "rows.jsonl").write_text("")
    _cores(monkeypatch, 2)
    assert ingest_module._choose_workers(None, 200_000, FileRows(tmp_path / "rows.parquet", group)) == 1
    assert ingest_module._choose_workers(None, 200_000, FileRows(tmp_path / "rows.jsonl", group)) == 2
    _cores(monkeypatch, 8)
    assert ingest_module._choose_workers(None, 200_000, FileRows(tmp_path / "rows.parquet", group)) == 4


def test_more_cores_keep_the_pool_and_small_inputs_and_explicit_counts_win(monkeypatch):
    _cores(monkeypatch, 8)
    assert ingest_module._choose_workers(None, 200_000, pd.DataFrame({"a": [1]})) == 4
    assert ingest_module._choose_workers(None, 49_999, _FileLike()) == 1
    _cores(monkeypatch, 2)
    assert ingest_module._choose_workers(3, 200_000, [{"a": 1}]) == 3
    assert ingest_module._choose_workers(0, 200_000, [{"a": 1}]) == 1


def test_an_arrow_slice_is_copied_out_before_it_is_pickled():
    table = pa.table({"n": np.arange(200_000), "s": [f"text-{i}" for i in range(200_000)],
                      "l": [[float(i), -0.0] for i in range(200_000)]})
    parts = list(iter_parts(table, 5_000))
    start, part = parts[3]
    assert start == 15_000
    whole = len(pickle.dumps(part))
    compact = compact_part(part)
    assert compact.equals(part) and compact.schema == part.schema
    assert len(pickle.dumps(compact)) * 20 < whole  # the slice's share, not the table's buffers
    assert compact_part(compact) is compact  # already compact: not copied again
    frame = pd.DataFrame({"a": [1, 2]})
    assert compact_part(frame) is frame and compact_part([{"a": 1}]) == [{"a": 1}]


class _RecordingPool:
    """Records whether the heap was frozen when submit ran (where the fork start method forks)."""

    def __init__(self) -> None:
        self.frozen_at_submit: list[bool] = []

    def submit(self, fn, *args):
        self.frozen_at_submit.append(gc.get_freeze_count() > 0)
        return fn(*args)


def test_the_first_submit_forks_with_the_heap_frozen_and_unfreezes_after():
    gc.unfreeze()
    pool = _RecordingPool()
    assert ingest_module._first_submit(pool, lambda x: x + 1, 1) == 2
    assert pool.frozen_at_submit == [True]
    assert gc.get_freeze_count() == 0


def test_a_heap_frozen_before_stays_frozen():
    gc.freeze()  # as streams.gc_tuning.settle_heap leaves a long-running process
    try:
        pool = _RecordingPool()
        ingest_module._first_submit(pool, lambda: None)
        assert pool.frozen_at_submit == [True]
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
