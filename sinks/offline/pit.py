"""Point-in-time join: training data without leakage from the future.

For EACH entity row (identifier(s) + timestamp) attach, per requested group, the values of
the latest row of that identifier whose event time is at or before the row's timestamp —
nulls if there is none, if it is a delete marker, or if it is older than ``max_age``.

How: one DuckDB statement, one ``ASOF LEFT JOIN`` per group. ASOF alone is not deterministic
among rows with equal event times, so it joins on the version key of ``schemas/ordering.py``
packed into one HUGEINT (``pit_key_sql``) on the feature side, and on the greatest key at the
entity's timestamp (``pit_bound_sql``) on the entity side. "Greatest key <= entity key" is
then exactly "the version that wins among those with event time <= timestamp", with no
pre-deduplication pass over the table (which would cost a full sort/hash of it).
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from schemas.ordering import pit_bound_sql, pit_key_sql
from sinks.offline.query_errors import EntityRowsError, UnknownFeatureError, UnknownGroupError
from sinks.offline.query_source import EVENT_TIME_NS_COLUMN, OfflineSource, quote_ident


class QueryEngine(Protocol):
    """What the join needs of ``sinks.offline.query.OfflineQuery`` (named structurally, so that
    query.py can call this module without the two importing each other)."""

    sources: Mapping[str, OfflineSource]

    def source(self, group: str) -> OfflineSource: ...

    def relation_sql(self, group: str, *, as_of_ns: int | None = None, since_ns: int | None = None,
                     with_event_time_ns: bool = False) -> str: ...

    def register_arrow(self, table: pa.Table) -> str: ...

    def execute(self, sql: str, params: Any = None, *, views: bool = True) -> pa.Table: ...

DEFAULT_TIMESTAMP_COLUMN = "event_time"
FeatureRequest = Sequence[str] | Sequence[tuple[str, Sequence[str]]] | Mapping[str, Sequence[str]]


def parse_feature_request(features: Any, sources: Mapping[str, OfflineSource]) -> dict[str, list[str]]:
    """``["g:f", "g:*"]``, ``[("g", ["f"])]`` or ``{"g": ["f"]}`` → ordered {group: [features]}.

    ``g:*`` means every feature except the record identifier and the event time (those are
    the join keys; ask for the event time by name to see *which* row was picked).
    """
    if isinstance(features, str | bytes) or features is None:
        raise EntityRowsError(f"features must be a list like ['group:feature', 'group:*'], got {features!r}")
    pairs: list[tuple[str, str]] = []
    items = features.items() if isinstance(features, Mapping) else features
    for item in items:
        if isinstance(item, str):
            group, sep, feature = item.partition(":")
            if not sep or not group or not feature:
                raise EntityRowsError(f"feature reference {item!r} is not 'group:feature' or 'group:*'",
                                      value=item)
            pairs.append((group, feature))
        elif isinstance(item, tuple | list) and len(item) == 2 and isinstance(item[0], str) \
                and not isinstance(item[1], str) and isinstance(item[1], Iterable):
            pairs.extend((item[0], str(f)) for f in item[1])
        else:
            raise EntityRowsError(f"feature reference {item!r} is neither 'group:feature' nor "
                                  f"(group, [features])", value=item)
    if not pairs:
        raise EntityRowsError("no features requested; pass e.g. ['group:feature'] or ['group:*']")
    out: dict[str, list[str]] = {}
    for group, feature in pairs:
        if group not in sources:
            raise UnknownGroupError(group, sources)
        src = sources[group]
        known = src.feature_names
        wanted = out.setdefault(group, [])
        if feature == "*":
            names = [n for n in known if n not in (src.record_identifier_name, src.event_time_name)]
        elif feature in known:
            names = [feature]
        else:
            raise UnknownFeatureError(group, feature, known)
        wanted.extend(n for n in names if n not in wanted)
    return out


def _to_arrow(entity_rows: Any) -> pa.Table:
    if isinstance(entity_rows, pa.Table):
        return entity_rows
    if isinstance(entity_rows, pa.RecordBatch):
        return pa.Table.from_batches([entity_rows])
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover - pandas is a dependency
        pd = None
    if pd is not None and isinstance(entity_rows, pd.DataFrame):
        try:
            return pa.Table.from_pandas(entity_rows, preserve_index=False)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise EntityRowsError(f"entity rows cannot be converted to Arrow: {exc}") from None
    raise EntityRowsError(f"entity rows must be a pandas DataFrame or a pyarrow Table, "
                          f"got {type(entity_rows).__name__}", value=type(entity_rows).__name__)


def _plain(col: pa.ChunkedArray) -> pa.ChunkedArray:
    # pandas categoricals arrive as dictionaries; DuckDB joins plain values faster.
    return col.cast(col.type.value_type) if pa.types.is_dictionary(col.type) else col


def _entity_timestamps_ns(table: pa.Table, column: str) -> pa.ChunkedArray:
    if column not in table.column_names:
        raise EntityRowsError(f"entity rows have no timestamp column {column!r}; columns are "
                              f"{table.column_names} (pass timestamp_column=... to name it)", value=column)
    col = _plain(table.column(column))
    if not pa.types.is_timestamp(col.type):
        raise EntityRowsError(
            f"entity rows' {column!r} column has type {col.type}, not a timestamp; convert it with "
            f"pandas.to_datetime(df[{column!r}], utc=True)", feature=column, value=str(col.type))
    if col.type.tz is None:
        raise EntityRowsError(
            f"entity rows' {column!r} column is a timestamp without a time zone; a naive time is "
            f"ambiguous, attach one: df[{column!r}].dt.tz_localize('UTC')", feature=column, value=str(col.type))
    if col.null_count:
        first = pc.indices_nonzero(pc.is_null(col.combine_chunks())).slice(0, 5).to_pylist()
        raise EntityRowsError(f"entity rows' {column!r} column has {col.null_count} missing "
                              f"timestamp(s) (NaT/None), first at row(s) {first}; every row needs a time",
                              feature=column)
    try:
        return col.cast(pa.timestamp("ns", "UTC")).cast(pa.int64())
    except pa.ArrowInvalid as exc:
        raise EntityRowsError(f"entity rows' {column!r} column holds times outside 1677..2262 "
                              f"(nanosecond range): {exc}", feature=column) from None


def _check_id_column(table: pa.Table, src: OfflineSource) -> pa.ChunkedArray:
    name = src.record_identifier_name
    if name not in table.column_names:
        raise EntityRowsError(f"entity rows have no column {name!r}, the record identifier of group "
                              f"{src.name!r}; columns are {table.column_names}", group=src.name, feature=name)
    col = _plain(table.column(name))
    want = src.schema.field(name).type
    ok = ((pa.types.is_integer(want) and pa.types.is_integer(col.type))
          or (pa.types.is_string(want) or pa.types.is_large_string(want))
          and (pa.types.is_string(col.type) or pa.types.is_large_string(col.type) or pa.types.is_null(col.type)))
    # An empty frame often loses its dtypes (pandas makes empty columns object/float): nothing
    # to match, so any type is fine there.
    if not ok and not pa.types.is_null(col.type) and len(col):
        raise EntityRowsError(f"entity rows' {name!r} column has type {col.type} but group {src.name!r} "
                              f"identifies records by {want}", group=src.name, feature=name, value=str(col.type))
    return col.cast(want)


def _age_ns(max_age: Any) -> int | None:
    if max_age is None:
        return None
    if isinstance(max_age, _dt.timedelta):
        ns = getattr(max_age, "value", None)  # pandas Timedelta: exact ns
        ns = ns if isinstance(ns, int) else (max_age // _dt.timedelta(microseconds=1)) * 1000
    elif isinstance(max_age, int | float) and not isinstance(max_age, bool) and max_age == max_age:
        ns = int(max_age * 1_000_000_000)
    else:
        raise EntityRowsError(f"max_age {max_age!r} must be a timedelta or a number of seconds", value=max_age)
    if ns < 0:
        raise EntityRowsError(f"max_age {max_age!r} is negative; use a positive duration", value=max_age)
    return ns


def output_names(request: Mapping[str, list[str]], entity_columns: Sequence[str],
                 full_feature_names: bool) -> dict[tuple[str, str], str]:
    """Output column of each (group, feature): ``feature``, or ``group__feature`` (Feast's form)."""
    names: dict[tuple[str, str], str] = {}
    taken = {c: "entity rows" for c in entity_columns}
    for group, feats in request.items():
        for f in feats:
            out = f"{group}__{f}" if full_feature_names else f
            if out in taken:
                raise EntityRowsError(
                    f"output column {out!r} of group {group!r} collides with {taken[out]}; pass "
                    f"full_feature_names=True (columns named 'group__feature') or rename the entity column",
                    group=group, feature=f)
            taken[out] = f"feature {f!r} of group {group!r}"
            names[(group, f)] = out
    return names


def get_historical_features(query: QueryEngine, entity_rows: Any, features: FeatureRequest, *,
                            max_age: Any = None, timestamp_column: str = DEFAULT_TIMESTAMP_COLUMN,
                            full_feature_names: bool = False) -> pa.Table:
    """Point-in-time join of ``entity_rows`` with the requested features of ``query``'s groups.

    ``entity_rows``: DataFrame/Arrow table with, for each requested group, a column named like
    the group's record identifier, and a tz-aware timestamp column (``timestamp_column``).
    Returns every entity row, in the given order (duplicates too), with its columns unchanged,
    followed by one column per requested feature.

    Features of an aggregation group (``query.aggregations``) are its aggregates computed at each
    row's time from its source group's table (``sinks/offline/pit_aggregates.py``); the entity rows
    need a column named like its key. They come after the other groups' columns; ``max_age`` does
    not apply to them (a window is their age limit).
    """
    aggregated, features = split_aggregate_request(features, getattr(query, "aggregations", None) or {})
    table = _to_arrow(entity_rows)
    ts_ns = _entity_timestamps_ns(table, timestamp_column)
    if features is None and aggregated:  # only aggregates asked for
        out = table
    else:
        out = _join_latest(query, table, ts_ns, features, max_age, full_feature_names)
    for group, names in aggregated.items():
        out = _append_aggregates(query, out, table, ts_ns, group, names, full_feature_names)
    return out


def split_aggregate_request(features: Any, aggregations: Mapping[str, Any]) -> tuple[dict[str, list[str]], Any]:
    """The features of aggregation groups ({group: [aggregate names]}, ``g:*`` = all of them) and the
    rest of the request, in its own form (None if nothing is left)."""
    if not aggregations or features is None or isinstance(features, str | bytes):
        return {}, features
    items = list(features.items()) if isinstance(features, Mapping) else list(features)
    rest: list[Any] = []
    out: dict[str, list[str]] = {}

    def add(group: str, feature: str) -> None:
        spec = aggregations[group].aggregation
        known = [a.output_name for a in spec.aggregates]
        if feature == "*":
            names = known
        elif feature in known:
            names = [feature]
        else:
            raise UnknownFeatureError(group, feature, known)
        wanted = out.setdefault(group, [])
        wanted.extend(n for n in names if n not in wanted)

    for item in items:
        if isinstance(item, str) and item.partition(":")[0] in aggregations and item.partition(":")[2]:
            add(item.partition(":")[0], item.partition(":")[2])
        elif isinstance(item, tuple | list) and len(item) == 2 and isinstance(item[0], str) \
                and item[0] in aggregations and not isinstance(item[1], str) and isinstance(item[1], Iterable):
            for f in item[1]:
                add(item[0], str(f))
        else:
            rest.append(item)
    if not rest:
        return (out, None) if out else ({}, features)
    return out, dict(rest) if isinstance(features, Mapping) else rest


def _append_aggregates(query: QueryEngine, out: pa.Table, table: pa.Table, ts_ns: pa.ChunkedArray, group: str,
                       names: list[str], full_feature_names: bool) -> pa.Table:
    """``out`` with the aggregates ``names`` of aggregation group ``group`` at each row's time (DuckDB)."""
    from sinks.offline.pit_aggregates import AggregateRequest, DuckDBEngine, compute, lower_bound

    agg_group = query.aggregations[group]  # type: ignore[attr-defined]
    spec = agg_group.aggregation
    src = query.source(spec.source)

    def values(request: AggregateRequest, keys: pa.ChunkedArray, times: Any) -> dict[str, pa.Array]:
        rel = query.relation_sql(spec.source, since_ns=lower_bound(request, times), with_event_time_ns=True)
        return compute(DuckDBEngine(query), request, keys, times, source_relation=rel,
                       event_time_ns=EVENT_TIME_NS_COLUMN)

    return append_aggregates(out, table, ts_ns, agg_group, names, src.schema.field(spec.by).type, values,
                             full_feature_names)


def append_aggregates(out: pa.Table, table: pa.Table, ts_ns: pa.ChunkedArray, agg_group: Any, names: list[str],
                      key_type: pa.DataType, values: Any, full_feature_names: bool) -> pa.Table:
    """``out`` with aggregates ``names`` of ``agg_group`` for the entity rows ``table`` (times
    ``ts_ns``); ``values(request, keys, times)`` computes them (DuckDB or Spark)."""
    from sinks.offline.pit_aggregates import AggregateRequest

    group, spec = agg_group.name, agg_group.aggregation
    if spec.by not in table.column_names:
        raise EntityRowsError(f"entity rows have no column {spec.by!r}, the key of aggregation group {group!r}; "
                              f"columns are {table.column_names}", group=group, feature=spec.by)
    keys = _check_key_column(table, spec.by, key_type, group)
    computed = values(AggregateRequest.of(agg_group, names), keys, ts_ns.to_numpy())
    for name in names:
        column = f"{group}__{name}" if full_feature_names else name
        if column in out.column_names:
            raise EntityRowsError(f"output column {column!r} of aggregation group {group!r} collides with another "
                                  "column; pass full_feature_names=True (columns named 'group__feature') or rename "
                                  "the entity column", group=group, feature=name)
        out = out.append_column(column, computed[name])
    return out


def entity_table(entity_rows: Any, timestamp_column: str = DEFAULT_TIMESTAMP_COLUMN) -> tuple[pa.Table, pa.ChunkedArray]:
    """Entity rows as Arrow, and their times in ns (checked as the point-in-time join checks them)."""
    table = _to_arrow(entity_rows)
    return table, _entity_timestamps_ns(table, timestamp_column)


def _check_key_column(table: pa.Table, name: str, want: pa.DataType, group: str) -> pa.ChunkedArray:
    col = _plain(table.column(name))
    ok = (pa.types.is_integer(want) and pa.types.is_integer(col.type)) or \
        (pa.types.is_string(want) and (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)))
    if not ok and not pa.types.is_null(col.type) and len(col):
        raise EntityRowsError(f"entity rows' {name!r} column has type {col.type} but aggregation group {group!r} "
                              f"is keyed by {want}", group=group, feature=name, value=str(col.type))
    return col.cast(want)


def _join_latest(query: QueryEngine, table: pa.Table, ts_ns: pa.ChunkedArray, features: Any, max_age: Any,
                 full_feature_names: bool) -> pa.Table:
    """The point-in-time join of the plain groups' features (the latest row at or before each time)."""
    request = parse_feature_request(features, query.sources)
    age_ns = _age_ns(max_age)
    names = output_names(request, table.column_names, full_feature_names)

    id_cols: dict[str, str] = {}  # identifier column name → its slot in the entity relation
    entity = {"__row": pa.array(np.arange(table.num_rows, dtype=np.int64)), "__ts": ts_ns}
    for group in request:
        src = query.source(group)
        if src.record_identifier_name not in id_cols:
            slot = f"__id{len(id_cols)}"
            entity[slot] = _check_id_column(table, src)
            id_cols[src.record_identifier_name] = slot
    entity_table = pa.table(entity)
    reg = query.register_arrow(entity_table)

    bounds = None
    if table.num_rows:
        mm = pc.min_max(ts_ns)
        bounds = (mm["min"].as_py(), mm["max"].as_py())

    ctes = [f"__e AS (SELECT *, {pit_bound_sql('__ts')} AS __k FROM {reg})"]
    joins, selects = [], ["__e.__row"]
    for i, (group, feats) in enumerate(request.items()):
        src = query.source(group)
        ident = quote_ident(src.record_identifier_name)
        # Only rows that can be picked: not after the last entity time and, with max_age,
        # not older than the first entity time minus max_age. The relation applies the bounds
        # exactly, pushed down to the day partitions and Parquet statistics. Its event time is
        # read as the stored nanoseconds: the view's TIMESTAMPTZ_NS column and epoch_ns() of it
        # would cost a time-zone conversion per feature row (a third of this join's time at 10M).
        rel = query.relation_sql(group, as_of_ns=bounds[1] if bounds else None,
                                 since_ns=bounds[0] - age_ns if bounds and age_ns is not None else None,
                                 with_event_time_ns=True)
        et_ns = f"__src.{EVENT_TIME_NS_COLUMN}"
        where = "" if bounds else " WHERE false"
        feat_cols = ", ".join(f"{quote_ident(f)} AS __f{j}" for j, f in enumerate(feats))
        alias = f"__g{i}"
        # DuckDB's ASOF join (2.0) turns -0.0 inside a LIST of DOUBLE into 0.0 (scalars keep
        # it). Such columns stay out of its payload: the ASOF join matches a row number, and a
        # plain join on that number, which keeps them exact, fetches them.
        by_ref = {j for j, f in enumerate(feats) if _holds_double_list(src.schema.field(f).type)}
        row_ref = ", row_number() OVER () AS __r" if by_ref else ""
        ctes.append(
            f"{alias} AS {'MATERIALIZED ' if by_ref else ''}(SELECT {ident} AS __id, {et_ns} AS __et, "
            f"is_deleted AS __del, {pit_key_sql(et_ns)} AS __k{row_ref}, {feat_cols} "
            f"FROM {rel} AS __src{where})")
        slot = id_cols[src.record_identifier_name]
        joins.append(f"ASOF LEFT JOIN {alias} ON __e.{slot} = {alias}.__id AND __e.__k >= {alias}.__k")
        if by_ref:
            joins.append(f"LEFT JOIN {alias} AS {alias}v ON {alias}v.__r = {alias}.__r")
        hide = f"{alias}.__del"
        if age_ns is not None:
            hide += f" OR __e.__ts - {alias}.__et > {age_ns}"
        for j, f in enumerate(feats):
            value = f"{alias}v.__f{j}" if j in by_ref else f"{alias}.__f{j}"
            selects.append(f"CASE WHEN {hide} THEN NULL ELSE {value} END AS {quote_ident(names[(group, f)])}")
    sql = (f"WITH {', '.join(ctes)}\nSELECT {', '.join(selects)}\nFROM __e\n" + "\n".join(joins)
           + "\nORDER BY __e.__row")
    joined = query.execute(sql, views=False)

    out = table
    for group, feats in request.items():
        schema = query.source(group).schema
        for f in feats:
            name = names[(group, f)]
            col = joined.column(name)
            want = schema.field(f).type
            out = out.append_column(pa.field(name, want), col if col.type == want else col.cast(want))
    return out


def _holds_double_list(t: pa.DataType) -> bool:
    return (pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)) \
        and pa.types.is_floating(t.value_type)
