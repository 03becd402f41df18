"""The faust engine keeps its state directory out of the directory a processor is started from."""

from __future__ import annotations

import tempfile
from pathlib import Path

from streams.online.faust_app import build_online_app


async def _apply(_batch: object) -> None:
    return None


def test_faust_state_goes_under_the_temporary_directory_not_the_working_one(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # faust's default, '<app id>-data', would land here
    app = build_online_app(bootstrap="127.0.0.1:1", prefix="fs-test", apply_batch=_apply, list_topics=list)
    datadir = Path(app.conf.datadir)
    assert datadir.is_absolute() and Path(tempfile.gettempdir()) in datadir.parents, datadir
    assert tmp_path not in Path(app.conf.tabledir).parents
    assert datadir.name == "featurestream-faust-fs-test-online"  # one per app id: every run of a prefix reuses it
    assert datadir.parent.is_dir()  # faust makes only the last level (mkdir without parents) when it starts
    assert list(tmp_path.iterdir()) == []
