"""Which data files of a table are live: THE listing readers use (never ``glob`` the bucket).

Live = every data file under ``<table>/data``
       minus the inputs of committed compaction manifests (already merged elsewhere),
       minus compaction outputs that have no committed manifest (crashed/in-progress).
A manifest (``<table>/_manifests/<id>.json``) is written with one atomic PUT after its output
is durable, so its appearance is the commit point of a compaction (see compaction.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from sinks.offline import layout
from sinks.offline.errors import OfflineLayoutError, OfflineStorageError
from sinks.offline.fs import find_files, read_bytes, storage_errors

MANIFEST_FORMAT = 1
_SNAPSHOT_ATTEMPTS = 20


@dataclass(frozen=True, slots=True)
class Manifest:
    """A committed compaction: ``inputs`` were merged into ``output`` (paths relative to the table)."""

    id: str
    output: str
    inputs: tuple[str, ...]
    rows: int
    committed_at_ns: int

    def to_json(self) -> bytes:
        return json.dumps({"format": MANIFEST_FORMAT, "id": self.id, "output": self.output,
                           "inputs": list(self.inputs), "rows": self.rows,
                           "committed_at_ns": self.committed_at_ns}, indent=1).encode()

    @classmethod
    def from_json(cls, data: bytes, where: str) -> Manifest:
        try:
            d = json.loads(data)
            if d.get("format") != MANIFEST_FORMAT:
                raise ValueError(f"format {d.get('format')!r}, expected {MANIFEST_FORMAT}")
            m = cls(str(d["id"]), str(d["output"]), tuple(str(i) for i in d["inputs"]), int(d["rows"]),
                    int(d["committed_at_ns"]))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise OfflineLayoutError(f"compaction manifest {where!r} is not a featurestream manifest "
                                     f"({type(exc).__name__}: {exc}); expected JSON with format, id, output, "
                                     "inputs, rows, committed_at_ns") from None
        if layout.compaction_id_of(m.output) != m.id or not m.inputs:
            raise OfflineLayoutError(f"compaction manifest {where!r} is inconsistent: output {m.output!r} "
                                     f"does not match id {m.id!r} or it has no inputs")
        return m


def table_path_of(fs: Any, table_uri: str) -> str:
    if not isinstance(table_uri, str) or not table_uri.strip("/ "):
        raise OfflineLayoutError(f"table URI must be a non-empty string; got {table_uri!r}")
    return fs._strip_protocol(table_uri).rstrip("/")


def relative(table_path: str, path: str) -> str:
    return path[len(table_path) + 1:] if path.startswith(table_path + "/") else path


def read_manifests(fs: Any, table_path: str) -> dict[str, Manifest]:
    """Committed manifests by id (a manifest deleted while listing is simply gone)."""
    out: dict[str, Manifest] = {}
    for path in find_files(fs, layout.manifest_root(table_path)):
        name = layout.basename(path)
        if name.startswith((".", "_")) or not name.endswith(".json"):
            continue
        try:
            data = read_bytes(fs, path)
        except FileNotFoundError:
            continue
        m = Manifest.from_json(data, path)
        out[m.id] = m
    return out


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A consistent view: all data files, the committed manifests, and the live files among them."""

    table_path: str
    files: list[str]
    manifests: dict[str, Manifest]
    live: list[str]


def _is_data(path: str, table_path: str) -> bool:
    rel = relative(table_path, path)
    return rel.endswith(".parquet") and not layout.is_hidden(rel)


def snapshot(fs: Any, table_uri: str, under: str | None = None) -> Snapshot:
    """List manifests, then files, then manifests again; retry until the two manifest lists agree.

    Why the order: a compaction commits (manifest) and only then deletes its inputs. Reading
    the manifests first and again after the files proves no commit happened in between, so
    the file list and the manifests describe the same moment: no row missed, none doubled.
    """
    table_path = table_path_of(fs, table_uri)
    root = layout.data_root(table_path) if under is None else f"{layout.data_root(table_path)}/{under}"
    for _ in range(_SNAPSHOT_ATTEMPTS):
        before = read_manifests(fs, table_path)
        files = [p for p in find_files(fs, root) if _is_data(p, table_path)]
        after = read_manifests(fs, table_path)
        if before.keys() == after.keys():
            break
    else:
        raise OfflineStorageError(f"table {table_uri!r}: compaction manifests kept changing while listing "
                                  f"({_SNAPSHOT_ATTEMPTS} attempts); is a compactor looping?")
    dead = {i for m in after.values() for i in m.inputs}
    outputs = {m.output for m in after.values()}
    live = []
    for p in files:
        rel = relative(table_path, p)
        if rel in dead:
            continue
        if layout.compaction_id_of(rel) is not None and rel not in outputs:
            continue
        live.append(p)
    return Snapshot(table_path, files, after, live)


def list_live_files(fs: Any, table_uri: str) -> list[str]:
    """Paths (in the fs's own form) of every live data file of the table, sorted."""
    return snapshot(fs, table_uri).live


def live_file_uris(fs: Any, table_uri: str) -> list[str]:
    """Like list_live_files but as URIs a SQL engine takes (``s3://bucket/...``, or a local path)."""
    paths = list_live_files(fs, table_uri)
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    if protocol in ("file", "local"):
        return paths
    return [f"{protocol}://{p}" for p in paths]


def read_live_table(fs: Any, table_uri: str, columns: list[str] | None = None,
                    attempts: int = 5) -> pa.Table:
    """Every live row of a table. A file deleted between listing and reading (a compaction
    finished meanwhile) makes it list again instead of silently missing rows."""
    last: Exception | None = None
    for _ in range(attempts):
        paths = list_live_files(fs, table_uri)
        try:
            tables = []
            for p in paths:
                with storage_errors("read", p), fs.open(p, "rb") as f:
                    tables.append(pq.read_table(f, columns=columns).replace_schema_metadata(None))
        except FileNotFoundError as exc:
            last = exc
            continue
        if not tables:
            return pa.table({})
        return pa.concat_tables(tables, promote_options="default")
    raise OfflineStorageError(f"table {table_uri!r}: live files kept disappearing while reading "
                              f"({attempts} attempts): {last}")
