"""Where one group's offline rows come from, and how DuckDB reads them.

A query never lists a table's directory itself: the catalog (``sinks.offline.catalog``) is
the only correct list of live files (it hides compaction inputs/outputs in flight), so a
source is a *frozen list of files* taken once per query — every statement of one query sees
the same snapshot of the table even if compaction commits meanwhile.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import duckdb
import pyarrow as pa

# Columns every offline table has besides the group's features (see the offline writer).
METADATA_COLUMNS = ("api_invocation_time", "write_time", "is_deleted",
                    "_kafka_topic", "_kafka_partition", "_kafka_offset")

_HOUR_RE = re.compile(r"year=(\d{4})/month=(\d{1,2})/day=(\d{1,2})/hour=(\d{1,2})(?:/|$)")
_HOUR_NS = 3600 * 1_000_000_000


@dataclass(frozen=True)
class OfflineSource:
    """One group's offline table: its key columns, Arrow schema and live Parquet files.

    ``filesystem`` is an fsspec filesystem (s3fs for ``s3://``); ``None`` or a local fsspec
    filesystem means ``files`` are local paths, which DuckDB reads natively (fastest).
    """

    name: str
    record_identifier_name: str
    event_time_name: str
    schema: pa.Schema
    files: tuple[str, ...] = ()
    filesystem: Any = field(default=None, compare=False)

    @classmethod
    def from_group(cls, group: Any, storage_options: Mapping[str, Any] | None = None) -> OfflineSource:
        """Resolve a ``schemas.group.FeatureGroup``'s table: its schema and its live files now."""
        # Imported here so the pure parts of this module load before those modules exist.
        from schemas.ddl import offline_arrow_schema
        from sinks.offline.catalog import list_live_files
        from sinks.offline.fs import open_filesystem

        if not group.offline_uri:
            from sinks.offline.query_errors import QueryError

            raise QueryError(f"feature group {group.name!r} has no offline store (offline_uri is None); "
                             f"only groups created with the offline store enabled can be queried")
        fs, root = open_filesystem(group.offline_uri, dict(storage_options or {}))
        files = tuple(list_live_files(fs, root))
        return cls(name=group.name, record_identifier_name=group.record_identifier_name,
                   event_time_name=group.event_time_name, schema=offline_arrow_schema(group),
                   files=files, filesystem=fs)

    @property
    def feature_names(self) -> list[str]:
        """Every feature of the group (identifier and event time included), in schema order."""
        return [n for n in self.schema.names if n not in METADATA_COLUMNS]

    def files_up_to(self, as_of_ns: int | None) -> tuple[str, ...]:
        """Files that may hold rows with event time <= ``as_of_ns``.

        The Hive layout partitions by event-time hour, so a file under an hour that starts
        after ``as_of`` cannot contain a qualifying row: skipping it saves opening it at all.
        Paths without a recognisable partition are always kept (never wrong, only slower).
        """
        if as_of_ns is None:
            return self.files
        return tuple(f for f in self.files if (_hour_start_ns(f) or 0) <= as_of_ns)


def _hour_start_ns(path: str) -> int | None:
    m = _HOUR_RE.search(path.replace("\\", "/"))
    if m is None:
        return None
    y, mo, d, h = (int(x) for x in m.groups())
    try:
        t = datetime(y, mo, d, h, tzinfo=UTC)
    except ValueError:
        return None
    return int(t.timestamp()) * 1_000_000_000


def is_local(filesystem: Any) -> bool:
    if filesystem is None:
        return True
    protocol = getattr(filesystem, "protocol", None)
    protocols = (protocol,) if isinstance(protocol, str) else tuple(protocol or ())
    return "file" in protocols or "local" in protocols


def quote_ident(name: str) -> str:
    """A SQL identifier, double-quoted (group and feature names may contain '-')."""
    return '"' + name.replace('"', '""') + '"'


def _sql_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


class SourceRegistrar:
    """Registers sources in one DuckDB connection and hands back SQL that reads them.

    ``reader``: ``"auto"`` (DuckDB's native Parquet reader for local files, a pyarrow dataset
    over the fsspec filesystem otherwise), ``"duckdb"`` or ``"arrow"`` (forced, for benchmarks).
    """

    def __init__(self, con: duckdb.DuckDBPyConnection, reader: str = "auto") -> None:
        if reader not in ("auto", "duckdb", "arrow"):
            raise ValueError(f"reader {reader!r} is not one of 'auto', 'duckdb', 'arrow'")
        self.con = con
        self.reader = reader
        self._count = 0
        self._keep: list[Any] = []  # registered Arrow objects must outlive the connection's use

    def _register(self, obj: Any) -> str:
        self._count += 1
        name = f"__fs_src_{self._count}"
        self.con.register(name, obj)
        self._keep.append(obj)
        return name

    def relation_sql(self, source: OfflineSource, files: Sequence[str] | None = None) -> str:
        """A parenthesised SELECT with exactly ``source.schema``'s columns over ``files``.

        Older files may lack features added later by a group update: those columns read as
        NULL of the right type instead of failing or silently disappearing.
        """
        files = source.files if files is None else tuple(files)
        empty = self._register(source.schema.empty_table())
        if not files:
            return f"(SELECT * FROM {empty})"
        use_duckdb = self.reader == "duckdb" or (self.reader == "auto" and is_local(source.filesystem))
        if not use_duckdb:
            return f"(SELECT * FROM {self._register(self._arrow_dataset(source, files))})"
        file_list = "[" + ", ".join(_sql_string(str(f)) for f in files) + "]"
        scan = f"read_parquet({file_list}, union_by_name = true)"
        present = {row[0] for row in self.con.execute(f"DESCRIBE SELECT * FROM {scan}").fetchall()}
        types = {row[0]: row[1] for row in self.con.execute(f"DESCRIBE SELECT * FROM {empty}").fetchall()}
        cols = []
        for name in source.schema.names:
            q = quote_ident(name)
            cols.append(q if name in present else f"CAST(NULL AS {types[name]}) AS {q}")
        return f"(SELECT {', '.join(cols)} FROM {scan})"

    @staticmethod
    def _arrow_dataset(source: OfflineSource, files: Sequence[str]) -> Any:
        import pyarrow.dataset as ds
        from pyarrow.fs import FSSpecHandler, PyFileSystem

        fs = None if source.filesystem is None else PyFileSystem(FSSpecHandler(source.filesystem))
        return ds.dataset(list(files), filesystem=fs, format="parquet", schema=source.schema)
