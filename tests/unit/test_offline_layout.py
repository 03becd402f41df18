"""File names, hidden names, hour partitions and opening the file system."""

from __future__ import annotations

import pytest

from sinks.offline import layout
from sinks.offline.errors import OfflineLayoutError
from sinks.offline.fs import open_filesystem
from tests.support.offline import T0


def test_data_file_path_is_hive_by_event_hour_and_named_by_coordinates() -> None:
    hour = "year=2023/month=11/day=14/hour=22"
    assert layout.hour_dir("/t", T0) == f"/t/data/{hour}"
    path = layout.data_file_path("/t", hour, "fs.customers", 3, 42)
    assert path == f"/t/data/{hour}/fs.customers+00003+00000000000000000042.parquet"
    parsed = layout.parse_data_file_name(path)
    assert parsed == layout.DataFileName("fs.customers", 3, 42)


def test_lexical_order_is_offset_order() -> None:
    names = [layout.data_file_path("/t", "h", "x", 0, o) for o in (9, 10, 100, 2)]
    assert sorted(names) == [names[3], names[0], names[1], names[2]]


@pytest.mark.parametrize("name", ["x.parquet", "a+1+2.parquet", "t+00001+0042.parquet",
                                  "t+00001+00000000000000000042.csv", "", "compacted-abc.parquet"])
def test_foreign_names_do_not_parse(name: str) -> None:
    assert layout.parse_data_file_name(name) is None


def test_compacted_names() -> None:
    cid = layout.new_compaction_id()
    path = layout.compacted_file_path("/t/data/h", cid)
    assert layout.compaction_id_of(path) == cid
    assert layout.compaction_id_of("/t/data/h/compacted-xyz.parquet") is None
    assert layout.manifest_path("/t", cid) == f"/t/_manifests/{cid}.json"


@pytest.mark.parametrize(("path", "hidden"), [
    ("data/year=2023/a.parquet", False), ("data/year=2023/.tmp-1-a.parquet", True),
    ("data/year=2023/_a.parquet", True), ("_manifests/x.json", True), ("data/_tmp/a.parquet", True),
])
def test_hidden_names(path: str, hidden: bool) -> None:
    assert layout.is_hidden(path) is hidden


def test_hour_partition_of() -> None:
    assert layout.hour_partition_of("/t/data/year=2023/month=11/day=14/hour=22/f.parquet") == \
        "year=2023/month=11/day=14/hour=22"
    with pytest.raises(OfflineLayoutError, match="not inside a year="):
        layout.hour_partition_of("/t/data/f.parquet")


def test_open_local_filesystem(tmp_path) -> None:
    fs, root = open_filesystem(str(tmp_path / "off"))
    assert root == str(tmp_path / "off")
    fs2, root2 = open_filesystem(f"file://{tmp_path}/off/")
    assert root2 == str(tmp_path / "off")


@pytest.mark.parametrize(("uri", "match"), [
    ("", "non-empty"), (None, "non-empty"), (42, "non-empty"), ("s3://", "no bucket"),
    ("gs://bucket/x", "unsupported scheme"), ("ftp://host/x", "unsupported scheme"),
])
def test_open_filesystem_bad_uris(uri: object, match: str) -> None:
    with pytest.raises(OfflineLayoutError, match=match):
        open_filesystem(uri)  # type: ignore[arg-type]


@pytest.mark.parametrize("opts", ["key=a", ["a"], 5])
def test_open_filesystem_bad_options(tmp_path, opts: object) -> None:
    with pytest.raises(OfflineLayoutError, match="storage_options .* must be a dict"):
        open_filesystem(str(tmp_path), opts)  # type: ignore[arg-type]


def test_open_s3_filesystem_has_no_protocol_in_root() -> None:
    fs, root = open_filesystem("s3://bucket/prefix/", {"key": "a", "secret": "b"})
    assert root == "bucket/prefix"
    assert "s3" in fs.protocol
