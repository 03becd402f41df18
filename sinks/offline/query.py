"""SQL over feature groups' offline tables, and snapshots ("time travel").

Each group is a DuckDB view named after the group, so people write plain SQL with window
functions over it (quote names with '-': ``SELECT * FROM "my-group"``). The connection's
time zone is UTC, so the event-time column (TIMESTAMP WITH TIME ZONE, nanosecond precision)
compares with ``TIMESTAMP '2021-10-02 12:00:00'`` literals as UTC, whatever the machine's zone.

The SQL that defines "the latest row per identifier" lives here once (:func:`latest_rows_sql`)
and is what ``snapshot`` runs and what ``sinks/offline/README.md`` documents.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

import duckdb
import pyarrow as pa

from schemas.errors import FeatureStoreError, ValidationError
from schemas.eventtime import format_iso, parse_event_time
from schemas.ordering import latest_order_sql
from schemas.types import ScalarType
from sinks.offline.query_errors import QueryError, UnknownGroupError, UnknownTableError
from sinks.offline.query_source import (
    EVENT_TIME_NS_COLUMN,
    OfflineSource,
    SourceRegistrar,
    quote_ident,
    sources_from_groups,
)

_MISSING_TABLE_RE = re.compile(r"Table with name (.+?) does not exist", re.IGNORECASE)

TableSource = Any  # a schemas.group.FeatureGroup or an OfflineSource


def latest_rows_sql(table: str, id_col: str, event_time_col: str, *, as_of: str | None = None,
                    include_deleted: bool = False) -> str:
    """SQL for the latest row per identifier of ``table`` (optionally as of an event time).

    ``as_of`` is an ISO-8601 UTC text; rows with a later event time are ignored, which is
    time travel. Unless ``include_deleted``, identifiers whose latest row is a delete marker
    are dropped (their history before the delete is not resurrected).
    """
    t, ident, et = quote_ident(table), quote_ident(id_col), quote_ident(event_time_col)
    order = latest_order_sql(et)  # which row wins: schemas/ordering.py
    # CAST to TIMESTAMPTZ_NS keeps nanoseconds (a TIMESTAMP literal stops at microseconds).
    where = f"\n  WHERE {et} <= CAST('{as_of}' AS TIMESTAMPTZ_NS)" if as_of is not None else ""
    sql = (f"SELECT * EXCLUDE (__rank) FROM (\n"
           f"  SELECT *, row_number() OVER (PARTITION BY {ident} ORDER BY {order}) AS __rank\n"
           f"  FROM {t}{where}\n"
           f") WHERE __rank = 1")
    if not include_deleted:
        sql += " AND NOT is_deleted"
    return sql


def _as_of_ns(as_of: Any, group: str, event_time_col: str) -> int | None:
    if as_of is None:
        return None
    try:
        return parse_event_time(as_of, group=group, feature=event_time_col)
    except ValidationError as exc:
        raise ValidationError(f"snapshot of group {group!r}: as_of {as_of!r} is not a time: {exc}",
                              group=group, feature=event_time_col, value=as_of) from None


class OfflineQuery:
    """One DuckDB connection over a fixed set of groups' offline tables, each at one snapshot.

    ``groups``: a mapping of name → (``FeatureGroup`` or :class:`OfflineSource`), or an
    iterable of those (named by their ``name``). FeatureGroups are resolved through ``tables``
    (a ``sinks.offline.catalog.OfflineTables``) at their current snapshot, or at the one current
    at ``as_of_commit`` (time travel by commit), so all statements of this object read the same
    tables. A group's rows are scanned when a statement first needs them: plain SQL scans the
    groups it is given; ``snapshot`` and the point-in-time join scan only the event-time range
    they need (pushed down to the table scan). ``threads`` caps DuckDB's worker threads.

    ``scan``: ``"duckdb"`` (default) has DuckDB read the snapshot's data files itself, the file
    list from pyiceberg's scan planning (``query_files.py``); ``"pyiceberg"`` has pyiceberg read
    the rows into Arrow first (the previous path, and the fallback for tables with delete files).
    Both give the same answers.
    """

    def __init__(self, groups: Mapping[str, TableSource] | Iterable[TableSource], *,
                 tables: Any = None, as_of_commit: Any = None, threads: int | None = None,
                 scan: str = "duckdb", aggregations: Iterable[Any] = ()) -> None:
        self.sources: dict[str, OfflineSource] = sources_from_groups(groups, tables, as_of_commit=as_of_commit)
        # Aggregation groups (schemas.group.FeatureGroup with .aggregation) computed from their source
        # group, which must be among ``groups``: the point-in-time join and snapshot answer them.
        self.aggregations: dict[str, Any] = {g.name: g for g in aggregations}
        for g in self.aggregations.values():
            if g.aggregation is None or g.aggregation.source not in self.sources:
                raise QueryError(f"feature group {g.name!r}: an aggregation group is read through its source "
                                 "group's table; pass the source group too")
        self.con = duckdb.connect()
        # UTC: TIMESTAMP literals and timestamptz output must not depend on the host's zone.
        self.con.execute("SET TimeZone = 'UTC'")
        if threads is not None:
            self.con.execute(f"SET threads = {int(threads)}")
        try:
            self._registrar = SourceRegistrar(self.con, scan=scan)
        except QueryError:
            self.con.close()
            raise
        self._views_ready = False

    def _ensure_views(self) -> None:
        """Each group as a view named after it (scanned once, on the first plain SQL statement); an
        aggregation group as its snapshot now."""
        if self._views_ready:
            return
        for name, src in self.sources.items():
            try:
                self.con.execute(f"CREATE TEMP VIEW {quote_ident(name)} AS {self._registrar.relation_sql(src)}")
            except (duckdb.Error, pa.ArrowException, OSError) as exc:
                raise QueryError(f"cannot read the offline table of group {name!r}: {exc}") from None
            except FeatureStoreError:
                raise
            except Exception as exc:  # noqa: BLE001 - pyiceberg/S3 errors: name the group
                raise QueryError(f"cannot read the offline table of group {name!r}: "
                                 f"{type(exc).__name__}: {exc}") from None
        for name in self.aggregations:  # its values now, as an online read answers them (snapshot: any time)
            rows = self.register_arrow(self._aggregate_snapshot(name, None))
            self.con.execute(f"CREATE TEMP VIEW {quote_ident(name)} AS SELECT * FROM {rows}")
        self._views_ready = True

    # -- plumbing ---------------------------------------------------------------------------

    def __enter__(self) -> OfflineQuery:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.con.close()

    def source(self, group: str) -> OfflineSource:
        """The source of ``group`` or an error listing the known groups."""
        try:
            return self.sources[group]
        except (KeyError, TypeError):
            raise UnknownGroupError(str(group), self.sources) from None

    def relation_sql(self, group: str, *, as_of_ns: int | None = None, since_ns: int | None = None,
                     with_event_time_ns: bool = False) -> str:
        """A SELECT over ``group``'s rows with event time in [since_ns, as_of_ns] (None: open);
        the bounds are pushed into the table scan, so days outside them are never read.
        ``with_event_time_ns``: plus the column ``EVENT_TIME_NS_COLUMN``, the exact event time as
        BIGINT nanoseconds (cheaper than ``epoch_ns`` of the view's timestamp)."""
        src = self.source(group)
        try:
            return self._registrar.relation_sql(src, as_of_ns, since_ns, with_event_time_ns=with_event_time_ns)
        except FeatureStoreError:
            raise
        except Exception as exc:  # noqa: BLE001 - pyiceberg/S3 errors: name the group
            raise QueryError(f"cannot read the offline table of group {group!r}: {type(exc).__name__}: {exc}") \
                from None

    @property
    def reads(self) -> dict[str, str]:
        """How each group's rows were last read: ``"duckdb"`` (DuckDB read the data files) or
        ``"pyiceberg"`` (Arrow from pyiceberg: asked for, or the table has delete files, ...)."""
        return dict(self._registrar.reads)

    def register_arrow(self, table: pa.Table) -> str:
        """Make an Arrow table readable by this connection's SQL; returns its (internal) name."""
        return self._registrar._register(table)

    def execute(self, sql: str, params: Any = None, *, views: bool = True) -> pa.Table:
        """Run ``sql`` and return an Arrow table, turning DuckDB errors into typed ones.

        ``views=False``: the statement reads only relations from :meth:`relation_sql` (snapshot,
        the point-in-time join), so the groups' full views need not be scanned."""
        if not isinstance(sql, str) or not sql.strip():
            raise QueryError(f"the query must be a non-empty SQL string, got {sql!r}", sql=None)
        if views:
            self._ensure_views()
        try:
            # con.sql (a relation) hands Arrow over without the extra copy of the DB-API path.
            rel = self.con.sql(sql, params=params) if params is not None else self.con.sql(sql)
            return rel.to_arrow_table() if rel is not None else pa.table({})
        except duckdb.CatalogException as exc:
            m = _MISSING_TABLE_RE.search(str(exc))
            if m:
                raise UnknownTableError(m.group(1).strip('"'), self.sources, sql=sql) from None
            raise QueryError(f"query failed: {exc}", sql=sql) from None
        except duckdb.Error as exc:
            group = self._registrar.group_of_file_in(str(exc))  # DuckDB read a data file itself
            if group is not None:
                raise QueryError(f"cannot read the offline table of group {group!r}: {type(exc).__name__}: {exc}",
                                 sql=sql) from None
            raise QueryError(f"query failed: {exc} (groups: {', '.join(sorted(self.sources))})",
                             sql=sql) from None

    # -- what people call -------------------------------------------------------------------

    def sql(self, sql: str, params: Any = None) -> pa.Table:
        """Plain SQL over the groups (each a view named after its group) → Arrow table."""
        return self.execute(sql, params)

    def to_pandas(self, sql: str, params: Any = None) -> Any:
        """Same as :meth:`sql`, as a pandas DataFrame."""
        return self.sql(sql, params).to_pandas()

    def snapshot(self, group: str, as_of: Any = None, include_deleted: bool = False) -> pa.Table:
        """The latest row per identifier with event time <= ``as_of`` (every row if None).

        ``as_of``: an aware datetime / pandas Timestamp, ISO-8601 text or epoch seconds.
        Identifiers whose latest row is a delete marker are left out unless ``include_deleted``.
        An aggregation group's snapshot is its aggregates as an online read at ``as_of`` (None: now)
        answers them, one row per key with an event at or before then.
        """
        if group in self.aggregations:
            return self._aggregate_snapshot(group, as_of)
        src = self.source(group)
        as_of_ns = _as_of_ns(as_of, group, src.event_time_name)
        body = latest_rows_sql("__snap", src.record_identifier_name, src.event_time_name,
                               as_of=None if as_of_ns is None else format_iso(as_of_ns),
                               include_deleted=include_deleted)
        rel = self.relation_sql(group, as_of_ns=as_of_ns)
        order = f"ORDER BY {quote_ident(src.record_identifier_name)}"
        return self.execute(f"WITH __snap AS (SELECT * FROM {rel})\n{body}\n{order}", views=False)

    def _aggregate_snapshot(self, group: str, as_of: Any) -> pa.Table:
        """Aggregation group ``group`` as an online read at ``as_of`` (default: now) answers it, for
        every key with an event at or before then: key, the read time, then each aggregate."""
        import time

        from sinks.offline.pit_aggregates import AggregateRequest, DuckDBEngine, compute, lower_bound

        agg = self.aggregations[group]
        spec = agg.aggregation
        t = time.time_ns() if as_of is None else _as_of_ns(as_of, group, agg.event_time_name)
        assert t is not None
        end = -(-t // 60_000_000_000) * 60_000_000_000  # a read at t covers events up to the next minute
        key = quote_ident(spec.by)
        keys = self.execute(f"SELECT DISTINCT {key} AS k FROM {self.relation_sql(spec.source, as_of_ns=end)} "
                            f"AS __src WHERE NOT is_deleted AND {key} IS NOT NULL ORDER BY k", views=False).column("k")
        request = AggregateRequest.of(agg)
        times = pa.array([t] * len(keys), pa.int64()).to_numpy()
        values = compute(DuckDBEngine(self), request, keys, times,
                         source_relation=self.relation_sql(spec.source, since_ns=lower_bound(request, times),
                                                           with_event_time_ns=True),
                         event_time_ns=EVENT_TIME_NS_COLUMN)
        when = pa.array([format_iso(t)] * len(keys), pa.string()) if agg.event_time.type is ScalarType.STRING \
            else pa.array([t / 1e9] * len(keys), pa.float64())
        return pa.table({spec.by: keys, agg.event_time_name: when, **values})

    def get_historical_features(self, entity_rows: Any, features: Any, *, max_age: Any = None,
                                timestamp_column: str = "event_time",
                                full_feature_names: bool = False) -> pa.Table:
        """Point-in-time join; see :func:`sinks.offline.pit.get_historical_features`."""
        from sinks.offline.pit import get_historical_features  # pit needs only a QueryEngine, not this module

        return get_historical_features(self, entity_rows, features, max_age=max_age,
                                       timestamp_column=timestamp_column,
                                       full_feature_names=full_feature_names)


def query(sql: str, groups: Mapping[str, TableSource] | Iterable[TableSource], *, tables: Any = None,
          as_of_commit: Any = None) -> pa.Table:
    """One-shot :meth:`OfflineQuery.sql`."""
    with OfflineQuery(groups, tables=tables, as_of_commit=as_of_commit) as q:
        return q.sql(sql)


def snapshot(group: TableSource, as_of: Any = None, include_deleted: bool = False, *, tables: Any = None,
             as_of_commit: Any = None) -> pa.Table:
    """One-shot :meth:`OfflineQuery.snapshot` of one group (a FeatureGroup or OfflineSource)."""
    with OfflineQuery([group], tables=tables, as_of_commit=as_of_commit) as q:
        return q.snapshot(group.name, as_of, include_deleted)


__all__ = ["OfflineQuery", "QueryError", "UnknownTableError", "FeatureStoreError", "latest_rows_sql",
           "query", "snapshot"]
