"""Table maintenance: compaction (an Iceberg rewrite), snapshot expiry, orphan-file removal.

**Compaction.** The small data files of one partition (a day of event time) are read and
written again as files near the target size, and one snapshot replaces the inputs with the
outputs. pyiceberg 0.12 has no rewrite-files action, so the snapshot is an ``overwrite`` that
deletes exactly the input files and adds the outputs: atomic, so every reader (featurestream,
Spark, Trino) sees either the inputs or the outputs, never both. The snapshot copies the
recorded Kafka offsets unchanged (``table_commit``), so resuming is unaffected. Any process may
compact any table: a conflicting commit reloads and retries; if another compaction removed an
input meanwhile, this one deletes its outputs and gives up on that group of files.

**Expiry and orphans.** Snapshots older than the retention window (default 7 days) are expired,
keeping time travel by commit within the window; within it, snapshots older than an hour are
thinned to one an hour (see :func:`snapshots_to_expire` for why). Orphan removal then deletes files under the
table's location that no remaining snapshot references and that are older than the window:
inputs of old compactions, files of expired snapshots, uploads of crashed or refused commits.
Files of the pre-Iceberg layout under the same location are never removed (``legacy_layout``).
The age threshold matters: a file uploaded but not yet committed is unreferenced too, so the
window must be longer than any upload-to-commit delay (seconds).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pyiceberg.exceptions import CommitFailedException
from pyiceberg.expressions import AlwaysTrue
from pyiceberg.io.pyarrow import ArrowScan
from pyiceberg.table import FileScanTask, Table

from sinks.offline.commit_retry import CommitConflictsExhausted, commit_with_retry
from sinks.offline.errors import OfflineStorageError
from sinks.offline.fs import STORAGE_EXCEPTIONS, open_filesystem, storage_errors
from sinks.offline.legacy_layout import is_legacy_path
from sinks.offline.table_commit import delete_files, offsets_property, recorded_offsets
from sinks.offline.table_files import write_data_files

log = logging.getLogger("featurestream.offline.maintenance")

DEFAULT_TARGET_BYTES = 128 * 1024 * 1024
DEFAULT_RETENTION_S = 7 * 24 * 3600.0
DENSE_WINDOW_S = 3600.0  # every snapshot of the last hour is kept; one an hour before that
# Test hooks: crash tests SIGKILL the process right after these steps of a rewrite.
STEPS = ("outputs_written", "committed")
Hook = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class RewriteResult:
    partition: str
    inputs: int
    outputs: int
    rows: int
    bytes_before: int
    bytes_after: int


def _live_files(table: Table) -> list[Any]:
    return [task.file for task in table.scan().plan_files()]


def plan_rewrites(table: Table, target_bytes: int) -> list[list[Any]]:
    """Groups of small live files, one partition each, that together stay near ``target_bytes``.

    A file counts as small below 3/4 of the target; a group needs at least two files.
    """
    by_partition: dict[str, list[Any]] = {}
    for f in _live_files(table):
        if f.file_size_in_bytes < target_bytes * 3 // 4:
            by_partition.setdefault(repr(f.partition), []).append(f)
    groups = []
    for files in by_partition.values():
        files.sort(key=lambda f: (f.file_size_in_bytes, f.file_path))
        current: list[Any] = []
        size = 0
        for f in files:
            if current and size + f.file_size_in_bytes > target_bytes:
                if len(current) > 1:
                    groups.append(current)
                current, size = [], 0
            current.append(f)
            size += f.file_size_in_bytes
        if len(current) > 1:
            groups.append(current)
    return groups


def _read_files(table: Table, files: list[Any]) -> Any:
    """The rows of ``files`` in the table's current schema (columns a file predates read as nulls)."""
    scan = ArrowScan(table.metadata, table.io, table.schema(), AlwaysTrue())
    return scan.to_table([FileScanTask(f) for f in files])


def _with_target(table: Table, target_bytes: int) -> Table:
    """The table with its target file size set to ``target_bytes`` for this write only."""
    props = {**table.metadata.properties, "write.target-file-size-bytes": str(int(target_bytes))}
    meta = table.metadata.model_copy(update={"properties": props})
    return Table(table._identifier, meta, table.metadata_location, table.io, table.catalog)


def rewrite_files(reload: Callable[[], Table], files: list[Any], *, target_bytes: int = DEFAULT_TARGET_BYTES,
                  hook: Hook | None = None, attempts: int = 20) -> RewriteResult | None:
    """Replace ``files`` (one partition's) by files near ``target_bytes``, in one snapshot.

    None if another writer removed one of the inputs first (its outputs are deleted)."""
    table = reload()
    rows = _read_files(table, files)
    outputs = write_data_files(_with_target(table, target_bytes), rows)
    if hook is not None:
        hook("outputs_written")
    wanted = {f.file_path for f in files}

    def step(table: Table) -> bool:
        """False when another writer removed an input first (the outputs are deleted)."""
        live = {f.file_path: f for f in _live_files(table)}
        if not wanted <= live.keys():
            delete_files(table, (f.file_path for f in outputs))
            log.info("%s: %d of the files to compact are gone (another compaction); dropping this rewrite",
                     table.name(), len(wanted - live.keys()))
            return False
        tx = table.transaction()
        props = offsets_property(recorded_offsets(table))
        with tx.update_snapshot(snapshot_properties=props).overwrite() as overwrite:
            for path in sorted(wanted):
                overwrite.delete_data_file(live[path])
            for f in outputs:
                overwrite.append_data_file(f)
        tx.commit_transaction()
        return True

    try:
        if not commit_with_retry(reload, step, attempts=attempts):
            return None
    except CommitConflictsExhausted:
        delete_files(reload(), (f.file_path for f in outputs))
        raise OfflineStorageError(f"table {table.name()}: compaction conflicted {attempts} times in a row; "
                                  "its outputs were deleted, the inputs stay") from None
    if hook is not None:
        hook("committed")
    return RewriteResult(repr(files[0].partition), len(files), len(outputs), rows.num_rows,
                         sum(f.file_size_in_bytes for f in files), sum(f.file_size_in_bytes for f in outputs))


def compact_table(reload: Callable[[], Table], *, target_bytes: int = DEFAULT_TARGET_BYTES,
                  hook: Hook | None = None) -> list[RewriteResult]:
    """Rewrite every group of small files of the table (see :func:`plan_rewrites`)."""
    done = []
    for files in plan_rewrites(reload(), target_bytes):
        result = rewrite_files(reload, files, target_bytes=target_bytes, hook=hook)
        if result is not None:
            done.append(result)
    return done


def snapshots_to_expire(snapshots: list[Any], current_id: int | None, now_ms: int, retention_s: float,
                        dense_s: float = DENSE_WINDOW_S) -> list[int]:
    """Which snapshots expiry removes (pure): all older than the retention window; within it,
    those older than ``dense_s`` except the newest of each hour. The current one always stays.

    Why thin: pyiceberg 0.12 copies the whole table metadata several times per commit, so a
    commit's cost grows with the snapshots kept (measured here: ~0.2 s at 50 snapshots, ~0.5-0.8 s
    at 200-300). A commit a minute kept for 7 days would be 10,000 snapshots. Thinned, the table
    keeps every commit of the last hour and one per hour before: ~230 for 7 days. Time travel by
    commit beyond the last hour is then to the hour (the state at the end of the hour before).
    """
    cutoff = now_ms - retention_s * 1000
    dense_from = now_ms - dense_s * 1000
    expire, newest_in_hour = [], {}
    for snap in sorted(snapshots, key=lambda x: x.timestamp_ms):
        if snap.snapshot_id == current_id or snap.timestamp_ms >= dense_from:
            continue
        if snap.timestamp_ms < cutoff:
            expire.append(snap.snapshot_id)
            continue
        hour = snap.timestamp_ms // 3_600_000
        if hour in newest_in_hour:
            expire.append(newest_in_hour[hour])
        newest_in_hour[hour] = snap.snapshot_id
    return expire


def expire_snapshots(table: Table, retention_s: float = DEFAULT_RETENTION_S, *,
                     now: datetime | None = None, dense_s: float = DENSE_WINDOW_S) -> int:
    """Expire what :func:`snapshots_to_expire` says; returns how many."""
    now_ms = int((now or datetime.now(UTC)).timestamp() * 1000)
    current = table.current_snapshot()
    old = snapshots_to_expire(table.metadata.snapshots, None if current is None else current.snapshot_id,
                              now_ms, retention_s, dense_s)
    if not old:
        return 0
    try:
        table.maintenance.expire_snapshots().by_ids(old).commit()
    except CommitFailedException:
        return 0  # a writer committed meanwhile; the next pass expires them
    return len(old)


def referenced_files(table: Table) -> set[str]:
    """Every file some snapshot of the table needs: metadata, manifest lists, manifests, data."""
    refs = {table.metadata_location, *(m.metadata_file for m in table.metadata.metadata_log)}
    seen_manifests: set[str] = set()
    for snap in table.metadata.snapshots:
        refs.add(snap.manifest_list)
        for manifest in snap.manifests(table.io):
            if manifest.manifest_path in seen_manifests:
                continue
            seen_manifests.add(manifest.manifest_path)
            refs.add(manifest.manifest_path)
            for entry in manifest.fetch_manifest_entry(table.io, discard_deleted=True):
                refs.add(entry.data_file.file_path)
    return {_bare(r) for r in refs}


def _bare(path: str) -> str:
    for scheme in ("s3://", "s3a://", "file://"):
        if path.startswith(scheme):
            return path[len(scheme):].rstrip("/")
    return path.rstrip("/")


def remove_orphans(table: Table, storage_options: Mapping[str, Any] | None = None,
                   older_than_s: float = DEFAULT_RETENTION_S, *, now: float | None = None) -> list[str]:
    """Delete files under the table's location that no snapshot references and that are older
    than ``older_than_s``; returns their paths."""
    fs, root = open_filesystem(table.location(), dict(storage_options or {}))
    refs = referenced_files(table)
    now = time.time() if now is None else now
    with storage_errors("list", root):
        fs.invalidate_cache()
        try:
            found = fs.find(root, detail=True)
        except FileNotFoundError:
            return []
    gone = []
    base = _bare(root)
    for path, info in found.items():
        if _bare(path) in refs or info.get("type") == "directory":
            continue
        if is_legacy_path(_bare(path).removeprefix(base)):
            continue  # the pre-Iceberg layout's files: data until `featurestream offline migrate` ran
        if now - _mtime(info) < older_than_s:
            continue  # maybe an upload whose commit is on its way
        try:
            fs.rm_file(path)
        except FileNotFoundError:
            continue
        except STORAGE_EXCEPTIONS as exc:
            log.warning("could not delete orphan %s: %s", path, exc)
            continue
        gone.append(path)
    return gone


def _mtime(info: Mapping[str, Any]) -> float:
    value = info.get("LastModified") or info.get("mtime") or info.get("created")
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, (int, float)):
        return float(value)
    return time.time()  # unknown: treat as new, never delete it
