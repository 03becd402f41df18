"""The offline layout before Iceberg (read only, for ``featurestream offline migrate``).

Until the Iceberg tables, a group's offline store was featurestream's own format, at the same
location as today's table (``<offline_uri>/<group>-<created>/``):

    data/year=YYYY/month=MM/day=DD/hour=HH/<topic>+<partition:05d>+<first offset:020d>.parquet
    data/year=.../compacted-<32 hex>.parquet    (a compaction's output: live only with its manifest)
    _manifests/<32 hex>.json                   ({"format": 1, "id", "output", "inputs", "rows", ...})

Every file holds rows in the view shape (``schemas.ddl.offline_arrow_schema``: timestamps as
Parquet INT64 nanoseconds). The live files were: every data file, minus the inputs of committed
manifests (merged into their output), minus compaction outputs without a manifest (a crash
before the commit). Names with a part starting with '.' or '_' were never data.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from sinks.offline.errors import OfflineLayoutError
from sinks.offline.fs import open_filesystem, storage_errors

DATA_DIR = "data"
MANIFEST_DIR = "_manifests"
HOUR_DIR = re.compile(r"year=\d{4}/month=\d{2}/day=\d{2}/hour=\d{2}/")
WRITER_FILE = re.compile(r"[A-Za-z0-9._-]+\+\d{5,}\+\d{20}\.parquet")
COMPACTED_FILE = re.compile(r"compacted-(?P<id>[0-9a-f]{32})\.parquet")


@dataclass(frozen=True)
class LegacyTable:
    """The old layout found under ``root``: its live data files (paths in the fs's form)."""

    fs: Any
    root: str
    live: list[str]
    dead: int  # files on disk that were not live (merged inputs, uncommitted outputs)


def is_legacy_path(relative_path: str) -> bool:
    """True for a path (relative to the table's location) of the old layout: its data files and
    manifests. Orphan removal keeps them: they are no snapshot's, but until migrated they are the
    group's only copy of those rows (and afterwards the operator's to delete)."""
    rel = relative_path.lstrip("/")
    return rel.startswith(f"{MANIFEST_DIR}/") or (rel.startswith(f"{DATA_DIR}/") and HOUR_DIR.search(rel) is not None)


def _relative(root: str, path: str) -> str:
    return path[len(root) + 1:] if path.startswith(root + "/") else path


def _hidden(rel: str) -> bool:
    return any(part.startswith((".", "_")) for part in rel.split("/") if part)


def find_legacy_table(uri: str, storage_options: dict[str, Any] | None = None) -> LegacyTable | None:
    """The old layout's live files at ``uri``, or None if there is no old-layout data file there."""
    fs, root = open_filesystem(uri, storage_options)
    root = root.rstrip("/")
    with storage_errors("list", root):
        fs.invalidate_cache()
        try:
            files = sorted(fs.find(f"{root}/{DATA_DIR}"))
        except FileNotFoundError:
            files = []
        try:
            manifest_paths = sorted(p for p in fs.find(f"{root}/{MANIFEST_DIR}") if p.endswith(".json"))
        except FileNotFoundError:
            manifest_paths = []
    data = [p for p in files if (rel := _relative(root, p)).startswith(f"{DATA_DIR}/") and not _hidden(rel)
            and HOUR_DIR.search(rel) and (WRITER_FILE.fullmatch(rel.rsplit("/", 1)[-1])
                                          or COMPACTED_FILE.fullmatch(rel.rsplit("/", 1)[-1]))]
    if not data:
        return None
    dead: set[str] = set()
    outputs: set[str] = set()
    for path in manifest_paths:
        with storage_errors("read", path):
            raw = fs.cat_file(path)
        try:
            m = json.loads(raw)
            if m.get("format") != 1:
                raise ValueError(f"format {m.get('format')!r}, expected 1")
            outputs.add(str(m["output"]))
            dead.update(str(i) for i in m["inputs"])
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise OfflineLayoutError(f"{path}: not a featurestream compaction manifest ({type(exc).__name__}: "
                                     f"{exc}); expected JSON with format 1, output and inputs") from None
    live = []
    for p in data:
        rel = _relative(root, p)
        if rel in dead or (COMPACTED_FILE.fullmatch(rel.rsplit("/", 1)[-1]) and rel not in outputs):
            continue
        live.append(p)
    return LegacyTable(fs, root, live, len(data) - len(live))
