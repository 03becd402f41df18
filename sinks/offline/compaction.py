"""Compaction: merge the small files of one hour partition toward a target size.

Protocol (readers use catalog.snapshot / list_live_files, which never shows a row twice or
misses one, whatever step a crash interrupts):

1. Eligible inputs: live files whose rows are all below the sink's committed offsets
   (``committed[(topic, partition)]`` = next offset to consume). A file past the committed
   offset may still be rewritten by redelivery under the same name; a committed one never is.
   Compaction outputs are eligible too (their inputs were).
2. Write the merged output as ``compacted-<id>.parquet`` (atomic). Without a manifest the
   catalog ignores it, so a crash here leaves an invisible orphan that ``recover`` deletes.
3. Write ``_manifests/<id>.json`` (inputs, output) with one atomic PUT: THE commit point.
   From now on the catalog shows the output and hides the inputs, even if they still exist.
4. Delete the inputs (immediately, or later by ``recover`` after a grace period so that
   readers which listed just before the commit can still open them).
5. Retire manifests: a manifest whose inputs are all gone and whose output was itself merged
   away (deleted in step 4 of a later compaction) describes nothing and is deleted. A manifest
   is never deleted while any of its inputs exists, so no input can come back to life.

``recover`` finishes or rolls back whatever a crash left: orphan outputs are deleted (roll
back), inputs of committed manifests are deleted (roll forward), empty manifests retired.
Run it before compacting; with several compactors on one table, give it an
``orphan_min_age_s`` longer than any compaction so it does not delete a live one's output.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from sinks.offline import layout
from sinks.offline.catalog import Manifest, Snapshot, relative, snapshot, table_path_of
from sinks.offline.errors import OfflineLayoutError
from sinks.offline.fs import delete_quietly_missing, find_files, storage_errors, write_atomic
from sinks.offline.partition_writer import table_bytes

DEFAULT_TARGET_BYTES = 128 * 1024 * 1024
Hook = Callable[[str], None]
STEPS = ("output_written", "manifest_committed", "inputs_deleted", "manifests_retired")


@dataclass(frozen=True, slots=True)
class FileInfo:
    path: str
    size: int
    rows: int
    topic: str | None       # None for a compaction output (mixed coordinates)
    partition: int | None
    last_offset: int | None


@dataclass(frozen=True, slots=True)
class CompactionResult:
    hour: str
    output: str | None
    inputs: list[str]
    rows: int
    bytes_before: list[int]
    bytes_after: int


def _file_info(fs: Any, path: str) -> FileInfo:
    with storage_errors("read footer of", path), fs.open(path, "rb") as f:
        md = pq.read_metadata(f)
    size = fs.size(path)
    kv = md.metadata or {}
    if layout.compaction_id_of(path) is not None:
        return FileInfo(path, size, md.num_rows, None, None, None)
    name = layout.parse_data_file_name(path)
    if name is None or layout.META_LAST not in kv:
        raise OfflineLayoutError(f"{path!r} is in the data folder but is not a featurestream file "
                                 f"(expected <topic>+<partition>+<first>.parquet with "
                                 f"{layout.META_LAST.decode()} metadata); move it out of the table")
    return FileInfo(path, size, md.num_rows, name.topic, name.partition, int(kv[layout.META_LAST]))


def _eligible(info: FileInfo, committed: Mapping[tuple[str, int], int]) -> bool:
    if info.topic is None:
        return True
    assert info.partition is not None and info.last_offset is not None
    return info.last_offset < committed.get((info.topic, info.partition), 0)


def plan_bins(files: list[FileInfo], target_bytes: int) -> list[list[FileInfo]]:
    """Greedy, in name order (= offset order): consecutive files up to ``target_bytes``.

    Files already at the target are left alone; a bin of one file would only rewrite it.
    Pure, unit tested.
    """
    bins: list[list[FileInfo]] = []
    current: list[FileInfo] = []
    size = 0
    for info in sorted(files, key=lambda i: i.path):
        if info.size >= target_bytes:
            continue
        if current and size + info.size > target_bytes:
            bins.append(current)
            current, size = [], 0
        current.append(info)
        size += info.size
    if current:
        bins.append(current)
    return [b for b in bins if len(b) >= 2]


def _merge(fs: Any, inputs: list[FileInfo]) -> pa.Table:
    tables = []
    for info in inputs:
        with storage_errors("read", info.path), fs.open(info.path, "rb") as f:
            tables.append(pq.read_table(f).replace_schema_metadata(None))
    table = pa.concat_tables(tables, promote_options="default")
    order = pc.sort_indices(table, sort_keys=[("_kafka_topic", "ascending"),
                                              ("_kafka_partition", "ascending"),
                                              ("_kafka_offset", "ascending")])
    return table.take(order)


def _hours(snap: Snapshot) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for p in snap.live:
        out.setdefault(layout.hour_partition_of(relative(snap.table_path, p)), []).append(p)
    return out


def _retire(fs: Any, table_path: str, manifests: Mapping[str, Manifest], delete_inputs: bool) -> None:
    """Roll committed manifests forward: delete their inputs, then retire empty manifests."""
    for m in manifests.values():
        if delete_inputs:
            delete_quietly_missing(fs, [f"{table_path}/{i}" for i in m.inputs])
    existing = {relative(table_path, p) for p in find_files(fs, layout.data_root(table_path))}
    for m in manifests.values():
        if m.output not in existing and not any(i in existing for i in m.inputs):
            delete_quietly_missing(fs, [layout.manifest_path(table_path, m.id)])


def _age_s(fs: Any, path: str, now: float) -> float:
    with storage_errors("stat", path):
        info = fs.info(path)
    t = info.get("LastModified") or info.get("mtime") or info.get("created")
    if isinstance(t, datetime):
        t = t.replace(tzinfo=t.tzinfo or UTC).timestamp()
    return now - float(t) if t is not None else float("inf")


def recover(fs: Any, table_uri: str, *, orphan_min_age_s: float = 0.0,
            input_grace_s: float = 0.0) -> dict[str, int]:
    """Finish or roll back interrupted compactions. Returns counts of what it removed.

    Inputs of a committed manifest are deleted once the manifest is ``input_grace_s`` old.
    """
    table_path = table_path_of(fs, table_uri)
    snap = snapshot(fs, table_uri)
    now = time.time()
    committed_outputs = {m.output for m in snap.manifests.values()}
    orphans = []
    for p in find_files(fs, layout.data_root(table_path)):
        rel = relative(table_path, p)
        temp = layout.basename(rel).startswith(".tmp-")
        orphan = layout.compaction_id_of(rel) is not None and rel not in committed_outputs
        if (temp or orphan) and _age_s(fs, p, now) >= orphan_min_age_s:
            orphans.append(p)
    delete_quietly_missing(fs, orphans)
    ripe = {k: m for k, m in snap.manifests.items()
            if (time.time_ns() - m.committed_at_ns) / 1e9 >= input_grace_s}
    before = len(find_files(fs, layout.manifest_root(table_path)))
    _retire(fs, table_path, ripe, delete_inputs=True)
    after = len(find_files(fs, layout.manifest_root(table_path)))
    return {"orphans_deleted": len(orphans), "manifests_retired": before - after}


def compact_hour(fs: Any, table_uri: str, hour: str, committed: Mapping[tuple[str, int], int], *,
                 target_bytes: int = DEFAULT_TARGET_BYTES, input_grace_s: float = 0.0,
                 hook: Hook | None = None, snap: Snapshot | None = None) -> list[CompactionResult]:
    """Compact the live, committed files of one hour partition (``year=../month=../day=../hour=..``)."""
    if type(target_bytes) is not int or target_bytes < 1:
        raise OfflineLayoutError(f"target_bytes must be a positive int; got {target_bytes!r}")
    if not isinstance(committed, Mapping):
        raise OfflineLayoutError(f"committed must map (topic, partition) to the next offset; got "
                                 f"{type(committed).__name__}")
    table_path = table_path_of(fs, table_uri)
    snap = snap or snapshot(fs, table_uri, under=hour)
    live = _hours(snap).get(hour, [])
    infos = [_file_info(fs, p) for p in live]
    eligible = [i for i in infos if _eligible(i, committed)]
    results = []
    for group in plan_bins(eligible, target_bytes):
        results.append(_compact_bin(fs, table_path, hour, group, snap.manifests, input_grace_s, hook))
    return results


def _compact_bin(fs: Any, table_path: str, hour: str, inputs: list[FileInfo],
                 manifests: Mapping[str, Manifest], input_grace_s: float, hook: Hook | None) -> CompactionResult:
    step = hook or (lambda _name: None)
    cid = layout.new_compaction_id()
    table = _merge(fs, inputs)
    expected = sum(i.rows for i in inputs)
    if table.num_rows != expected:  # a footer that lies would silently lose rows: refuse
        raise OfflineLayoutError(f"compaction of {hour}: read {table.num_rows} rows but the footers say "
                                 f"{expected}; inputs {[i.path for i in inputs]}")
    output = layout.compacted_file_path(f"{layout.data_root(table_path)}/{hour}", cid)
    data = table_bytes(table, {layout.META_COMPACTION: cid.encode()})
    write_atomic(fs, output, data)                                                   # (2)
    step("output_written")
    rel_inputs = tuple(relative(table_path, i.path) for i in inputs)
    manifest = Manifest(cid, relative(table_path, output), rel_inputs, table.num_rows, time.time_ns())
    write_atomic(fs, layout.manifest_path(table_path, cid), manifest.to_json())      # (3) commit
    step("manifest_committed")
    if input_grace_s <= 0:
        delete_quietly_missing(fs, [i.path for i in inputs])                         # (4)
        step("inputs_deleted")
        merged = {m.id: m for m in manifests.values() if m.output in rel_inputs}
        _retire(fs, table_path, merged, delete_inputs=False)                         # (5)
        step("manifests_retired")
    return CompactionResult(hour, output, [i.path for i in inputs], table.num_rows,
                            [i.size for i in inputs], len(data))


def compact_table(fs: Any, table_uri: str, committed: Mapping[tuple[str, int], int], *,
                  target_bytes: int = DEFAULT_TARGET_BYTES, input_grace_s: float = 0.0,
                  hook: Hook | None = None) -> list[CompactionResult]:
    """Recover, then compact every hour partition of a table that has something to merge."""
    recover(fs, table_uri, input_grace_s=input_grace_s)
    snap = snapshot(fs, table_uri)
    results: list[CompactionResult] = []
    for hour, paths in sorted(_hours(snap).items()):
        if len(paths) >= 2:
            results += compact_hour(fs, table_uri, hour, committed, target_bytes=target_bytes,
                                    input_grace_s=input_grace_s, hook=hook, snap=snap)
    return results
