"""Where one group's offline rows come from: its Iceberg table, read through pyiceberg scans.

A source pins one snapshot of the table when it is made, so every statement of one query sees
the same table even if the sink or a compaction commits meanwhile, and Iceberg's snapshots
guarantee that set of files holds each row once. Reads go through pyiceberg (manifests, then
the data files; schema evolution handled by field id) to Arrow, with event-time bounds pushed
into the scan: days outside them are never opened, and Parquet statistics skip row groups.
The rows come back in the view shape (``table_format.to_view_rows``): the event time exact to
the nanosecond, a ``TIMESTAMP WITH TIME ZONE`` in SQL.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

log = logging.getLogger("featurestream.offline.query")

# Columns every offline table has besides the group's features (see the offline writer).
METADATA_COLUMNS = ("api_invocation_time", "write_time", "is_deleted",
                    "_kafka_topic", "_kafka_partition", "_kafka_offset")


@dataclass(frozen=True)
class OfflineSource:
    """One group's offline table: its key columns, view schema, and the table at one snapshot.

    ``table`` is a pyiceberg Table (None: no table yet, which reads as empty) and ``snapshot_id``
    the snapshot every read uses (None with a table: its current one when the source was made).
    """

    name: str
    record_identifier_name: str
    event_time_name: str
    schema: pa.Schema
    table: Any = field(default=None, compare=False)
    snapshot_id: int | None = None

    @classmethod
    def from_group(cls, group: Any, tables: Any, *, as_of_commit: Any = None) -> OfflineSource:
        """Resolve a ``schemas.group.FeatureGroup``'s table (``tables``: a catalog.OfflineTables)
        at its current snapshot, or at the snapshot current at ``as_of_commit`` (time travel by
        commit: an aware datetime, ISO-8601 text or epoch seconds)."""
        # Imported here so the pure parts of this module load without pyiceberg's catalog.
        from schemas.ddl import offline_arrow_schema
        from sinks.offline.query_errors import QueryError

        if not group.offline_enabled or not group.offline_uri:
            raise QueryError(f"feature group {group.name!r} has no offline store (offline_uri is None); "
                             f"only groups created with the offline store enabled can be queried")
        table = tables.existing(group)
        snapshot_id = None
        if table is not None:
            snap = table.current_snapshot()
            if as_of_commit is not None:
                snap = snapshot_as_of(table, group.name, as_of_commit)
                if snap is None:
                    table = None  # the table held nothing yet at that time
            snapshot_id = None if snap is None else snap.snapshot_id
        return cls(name=group.name, record_identifier_name=group.record_identifier_name,
                   event_time_name=group.event_time_name, schema=offline_arrow_schema(group),
                   table=table, snapshot_id=snapshot_id)

    @property
    def feature_names(self) -> list[str]:
        """Every feature of the group (identifier and event time included), in schema order."""
        return [n for n in self.schema.names if n not in METADATA_COLUMNS]

    def row_filter(self, upper_ns: int | None, lower_ns: int | None) -> Any:
        """The scan's row filter on the microsecond event-time column. That column holds
        floor(ns / 1000), so ``ns <= upper`` implies ``us <= floor(upper / 1000)`` (and likewise
        for the lower bound): the filter keeps every qualifying row; the exact cut is on ns, later."""
        from pyiceberg.expressions import AlwaysTrue, And, GreaterThanOrEqual, LessThanOrEqual

        expr: Any = AlwaysTrue()
        if upper_ns is not None:
            expr = And(expr, LessThanOrEqual(self.event_time_name, upper_ns // 1000))
        if lower_ns is not None:
            expr = And(expr, GreaterThanOrEqual(self.event_time_name, lower_ns // 1000))
        return expr

    def files(self, upper_ns: int | None = None, lower_ns: int | None = None) -> list[str]:
        """The data files a read with these bounds opens (partition and column-statistics pruning)."""
        if self.table is None or self.snapshot_id is None:
            return []
        scan = self.table.scan(row_filter=self.row_filter(upper_ns, lower_ns), snapshot_id=self.snapshot_id)
        return [task.file.file_path for task in scan.plan_files()]

    def rows(self, upper_ns: int | None = None, lower_ns: int | None = None) -> pa.Table:
        """The rows with ``lower_ns <= event time <= upper_ns`` (None: unbounded), view-shaped;
        the bounds are pushed into the scan (:meth:`row_filter`), then applied exactly."""
        if self.table is None or self.snapshot_id is None:
            return self.schema.empty_table()
        from sinks.offline.table_format import to_view_rows

        et = self.event_time_name
        scanned = self.table.scan(row_filter=self.row_filter(upper_ns, lower_ns), snapshot_id=self.snapshot_id).to_arrow()
        rows = to_view_rows(scanned, self.schema, et)
        if upper_ns is None and lower_ns is None:
            return rows
        ns = rows.column(et).cast(pa.int64())
        keep = None
        if upper_ns is not None:
            keep = pc.less_equal(ns, upper_ns)
        if lower_ns is not None:
            low = pc.greater_equal(ns, lower_ns)
            keep = low if keep is None else pc.and_(keep, low)
        return rows.filter(keep)


def snapshot_as_of(table: Any, group: str, when: Any) -> Any:
    """The table's snapshot that was current at ``when`` (None: none yet)."""
    from schemas.errors import ValidationError
    from schemas.eventtime import format_iso, parse_event_time

    try:
        ns = parse_event_time(when, group=group, feature="as_of_commit")
    except ValidationError as exc:
        raise ValidationError(f"feature group {group!r}: as_of_commit {when!r} is not a time: {exc}",
                              group=group, feature="as_of_commit", value=when) from None
    ms = ns // 1_000_000
    current = None
    for entry in table.history():  # the snapshot log of the snapshots kept: (commit time, id), oldest first
        if entry.timestamp_ms > ms:
            break
        current = entry
    if current is not None:
        return table.snapshot_by_id(current.snapshot_id)
    kept = sorted(table.metadata.snapshots, key=lambda x: x.timestamp_ms)
    if kept and (kept[0].sequence_number or 1) > 1:
        # The oldest snapshot kept was not the table's first commit (sequence numbers count
        # commits; expiry clears parent ids): the table held something before, now expired.
        raise ValidationError(f"feature group {group!r}: as_of_commit {when!r} is before the oldest snapshot the "
                              f"table keeps ({format_iso(kept[0].timestamp_ms * 1_000_000)}; older ones expired "
                              "with the retention window)", group=group, feature="as_of_commit", value=when)
    return None  # before the table's first commit: it held nothing


def quote_ident(name: str) -> str:
    """A SQL identifier, double-quoted (group and feature names may contain '-')."""
    return '"' + name.replace('"', '""') + '"'


SCANS = ("duckdb", "pyiceberg")
# The column ``relation_sql(..., with_event_time_ns=True)`` adds: the exact event time as BIGINT ns.
EVENT_TIME_NS_COLUMN = "__fs_event_time_ns"


class SourceRegistrar:
    """Hands back SQL that reads sources' rows in one DuckDB connection.

    ``scan="duckdb"``: DuckDB reads the pinned snapshot's data files itself (``query_files``);
    a source it cannot read that way (delete files, ...) falls back to pyiceberg, logged.
    ``scan="pyiceberg"``: pyiceberg reads the rows to Arrow, which is registered with DuckDB.
    """

    def __init__(self, con: duckdb.DuckDBPyConnection, *, scan: str = "duckdb") -> None:
        if scan not in SCANS:
            from sinks.offline.query_errors import QueryError

            raise QueryError(f"scan must be one of {SCANS}, got {scan!r}")
        self.con = con
        self.scan = scan
        self._count = 0
        self._keep: list[Any] = []  # registered Arrow objects must outlive the connection's use
        self._view_types: dict[pa.Schema, list[str]] = {}
        self._file_groups: dict[str, str] = {}  # data file handed to DuckDB → its group
        self.reads: dict[str, str] = {}  # group → how its last relation reads: "duckdb" or "pyiceberg"

    def group_of_file_in(self, message: str) -> str | None:
        """The group of a data file that ``message`` (a DuckDB error) names, if any."""
        return next((g for path, g in self._file_groups.items() if path in message), None)

    def _register(self, obj: Any) -> str:
        self._count += 1
        name = f"__fs_src_{self._count}"
        self.con.register(name, obj)
        self._keep.append(obj)
        return name

    def relation_sql(self, source: OfflineSource, upper_ns: int | None = None,
                     lower_ns: int | None = None, *, with_event_time_ns: bool = False) -> str:
        """A parenthesised SELECT with exactly ``source.schema``'s columns over its rows in bounds;
        ``with_event_time_ns``: and, last, :data:`EVENT_TIME_NS_COLUMN`, the exact event time in
        integer nanoseconds. A statement that needs the time only as a number should read that
        column: the data files hold it as one, and turning it into the view's TIMESTAMPTZ_NS and
        back costs DuckDB a time-zone conversion per row (~45 ns with ICU, even in UTC)."""
        if self.scan == "duckdb" and source.table is not None and source.snapshot_id is not None:
            from sinks.offline.query_files import NotDirectlyReadable

            try:
                sql = self._files_sql(source, upper_ns, lower_ns, with_event_time_ns)
                self.reads[source.name] = "duckdb"
                return sql
            except NotDirectlyReadable as why:
                log.info("group %r: reading its table through pyiceberg: %s", source.name, why)
        self.reads[source.name] = "pyiceberg"
        extra = f", epoch_ns({quote_ident(source.event_time_name)}) AS {EVENT_TIME_NS_COLUMN}" \
            if with_event_time_ns else ""
        return f"(SELECT *{extra} FROM {self._register(source.rows(upper_ns, lower_ns))})"

    def _files_sql(self, source: OfflineSource, upper_ns: int | None, lower_ns: int | None,
                   with_event_time_ns: bool) -> str:
        from sinks.offline.query_files import (
            files_relation_sql,
            plan_file_read,
            read_parquet_source,
            s3_dataset,
        )

        names = source.schema.names
        plan = plan_file_read(source.table, source.snapshot_id, source.row_filter(upper_ns, lower_ns), names,
                              source.event_time_name)
        if not plan.paths:
            extra = f", NULL::BIGINT AS {EVENT_TIME_NS_COLUMN}" if with_event_time_ns else ""
            return f"(SELECT *{extra} FROM {self._register(source.schema.empty_table())})"
        if plan.on_s3:
            dataset, refs = s3_dataset(plan, source.table.io.properties)
            from_sql = self._register(dataset)
        else:
            from_sql, refs = read_parquet_source(plan)
        self._file_groups.update(dict.fromkeys(plan.paths, source.name))
        columns = list(zip([quote_ident(n) for n in names], self._duckdb_types(source.schema), strict=True))
        return files_relation_sql(plan, columns, from_sql, refs, upper_ns, lower_ns,
                                  event_time_ns_as=EVENT_TIME_NS_COLUMN if with_event_time_ns else None)

    def _duckdb_types(self, schema: pa.Schema) -> list[str]:
        """The DuckDB type of each column of ``schema`` as a registered Arrow table has it."""
        if schema not in self._view_types:
            name = self._register(schema.empty_table())
            described = self.con.sql(f"DESCRIBE SELECT * FROM {name}").fetchall()
            self._view_types[schema] = [row[1] for row in described]
        return self._view_types[schema]


def sources_from_groups(groups: Mapping[str, Any] | Any, tables: Any, *, as_of_commit: Any = None
                        ) -> dict[str, OfflineSource]:
    """name → OfflineSource for FeatureGroups (resolved through ``tables``) or ready sources."""
    items = groups.items() if isinstance(groups, Mapping) else ((g.name, g) for g in groups)
    out = {}
    for name, src in items:
        if not isinstance(src, OfflineSource):
            if tables is None:
                from sinks.offline.query_errors import QueryError

                raise QueryError(f"feature group {name!r}: no Iceberg catalog given to find its table "
                                 "(pass tables=OfflineTables.open(catalog_uri, prefix, storage_options))")
            src = OfflineSource.from_group(src, tables, as_of_commit=as_of_commit)
        out[name] = src
    return out
