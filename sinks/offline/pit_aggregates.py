"""Point-in-time aggregates: an aggregation group's values at each entity row's time, computed from
its source group's offline table, equal to what the online store serves (``sinks/online/aggregates.py``).

The rules the live fold follows, and how each is decided from the offline table:

- **Events.** Every put of the source (``NOT is_deleted``) whose key feature is not null; each Kafka
  offset is one row of the table, so a redelivery never counts twice and a record published twice
  (two offsets) counts twice, as live. A delete does not un-count anything.
- **Lateness.** Live, an event is dead-lettered when its event time is more than the allowed
  lateness behind the latest event time already folded for its key from its source partition.
  The table has each row's ``_kafka_partition`` and ``_kafka_offset``, so this is decidable exactly:
  dropped iff ``et + lateness < max(et of the earlier offsets of the same key and partition)``
  (a window function). Events that were themselves too late never raise that maximum (they are
  behind it), so the maximum over all earlier offsets is the live one.
- **Windows.** A value at T covers event times in ``(start, end]`` from ``schemas.tiles.window_bounds``,
  the online read's own bounds: exactly ``(T − w, T]`` at a whole hop, and at other times the
  tile-aligned window the online read merges. Lifetime: every event up to ``end``.
- **Values.** ``finish`` turns what the SQL gathered into the online read's values: count, min, max,
  last-N and every function of an Integral feature exactly as online (exact integer sums);
  distinct with Redis's HyperLogLog over the same texts (``schemas/hll.py``): the same estimate;
  Fractional sum and mean from the exact, correctly rounded sum of the window's values
  (``math.fsum``), stddev from the exact variance: online keeps Neumaier-compensated tile sums, which
  agree within 1e-12 relative (``schemas/aggregate_values.py``); the offline value does not depend on
  the order the engine reads rows in, so DuckDB and Spark give the same bits.

The SQL is written once for both engines (``dialect``: ``"duckdb"`` or ``"spark"``); only the
quoting and the integer shift differ. The source's events (:func:`events_sql`) and the entity rows
with their bounds (:func:`entity_bounds`) are joined once (:func:`joined_sql`: the lateness rule
and the windows); the statements (:func:`statements`) aggregate that, with per distinct-counted
feature the HyperLogLog register of each value (:func:`hll_table`).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Protocol

import numpy as np
import pyarrow as pa

from schemas.aggregate_values import NumericTile, numeric_value
from schemas.aggregation import Aggregate, Function
from schemas.ddl import offline_arrow_schema
from schemas.group import FeatureGroup
from schemas.hll import distinct_text, estimate, register_of
from schemas.tiles import MINUTE_NS, SIZE_NS, hop_of
from schemas.types import ScalarType

LIFETIME_LO = -(2**62)  # the "start" of a lifetime window: before every event time
DIALECTS = ("duckdb", "spark")


@dataclass(frozen=True)
class AggregateRequest:
    """Which aggregates of aggregation ``group`` to compute; windows and source features indexed."""

    group: FeatureGroup
    aggregates: tuple[Aggregate, ...]

    @classmethod
    def of(cls, group: FeatureGroup, names: Sequence[str] | None = None) -> AggregateRequest:
        spec = group.aggregation
        if spec is None:
            raise ValueError(f"feature group {group.name!r} is not an aggregation group")
        if names is None:
            return cls(group, spec.aggregates)
        by_name = {a.output_name: a for a in spec.aggregates}
        unknown = [n for n in names if n not in by_name]
        if unknown:
            raise ValueError(f"aggregation group {group.name!r} has no aggregate {unknown[0]!r} "
                             f"({', '.join(by_name)})")
        return cls(group, tuple(by_name[n] for n in names))

    @property
    def windows(self) -> list[int | None]:
        return list(dict.fromkeys(a.window_ns for a in self.aggregates))

    @property
    def features(self) -> list[str]:
        return list(dict.fromkeys(a.feature for a in self.aggregates))

    def integral(self, feature: str) -> bool:
        return ScalarType(self.group.aggregation.types[feature]) is ScalarType.INTEGRAL  # type: ignore[union-attr]

    def arrow_type(self, agg: Aggregate) -> pa.DataType:
        return offline_arrow_schema(self.group).field(agg.output_name).type


def entity_bounds(request: AggregateRequest, keys: pa.Array | pa.ChunkedArray, ts_ns: np.ndarray) -> pa.Table:
    """The entity relation: row number ``r``, key ``k``, ``hi`` (the read's end) and ``lo<i>`` (the
    start of window i of ``request.windows``), from ``schemas.tiles.window_bounds`` (vectorized)."""
    t = np.asarray(ts_ns, dtype=np.int64)
    cols: dict[str, Any] = {"r": pa.array(np.arange(len(t), dtype=np.int64)), "k": keys,
                            "hi": pa.array(-(-t // MINUTE_NS) * MINUTE_NS)}
    for i, w in enumerate(request.windows):
        if w is None:
            cols[f"lo{i}"] = pa.array(np.full(len(t), LIFETIME_LO, dtype=np.int64))
        else:
            size = SIZE_NS[hop_of(w)]
            cols[f"lo{i}"] = pa.array(-(-t // size) * size - w)
    return pa.table(cols)


def quote(name: str, dialect: str) -> str:
    """An identifier quoted as ``dialect`` quotes it (names may contain '-')."""
    if dialect == "duckdb":
        return '"' + name.replace('"', '""') + '"'
    return "`" + name.replace("`", "``") + "`"


def events_sql(request: AggregateRequest, relation: str, *, event_time_ns: str, dialect: str) -> str:
    """The source's events as ``k, et, p, o, v<j>`` (j: ``request.features``), from ``relation``
    (the source table's rows, a parenthesised SELECT or a name); ``event_time_ns`` is the exact event
    time in nanoseconds as an expression over it."""
    spec = request.group.aggregation
    assert spec is not None
    key = quote(spec.by, dialect)
    values = ", ".join(f"{quote(f, dialect)} AS v{j}" for j, f in enumerate(request.features))
    return (f"SELECT {key} AS k, {event_time_ns} AS et, _kafka_partition AS p, _kafka_offset AS o, {values} "
            f"FROM {relation} AS __src WHERE NOT is_deleted AND {key} IS NOT NULL")


def joined_sql(request: AggregateRequest, *, events: str, entity: str) -> str:
    """Each entity row (``r``, its window starts) with every event of its key that counts live (not
    too late) and falls in one of its windows: the rows every statement of :func:`statements` reads.
    ``events`` (the rows of :func:`events_sql`) and ``entity`` (of :func:`entity_bounds`) are relation
    names."""
    spec = request.group.aggregation
    assert spec is not None
    n = len(request.windows)
    lo_cols = ", ".join(f"e.lo{i}" for i in range(n))
    lo_min = "e.lo0" if n == 1 else f"least({lo_cols})"
    value_cols = ", ".join(f"x.v{j}" for j in range(len(request.features)))
    return (f"WITH __marked AS (SELECT *, max(et) OVER (PARTITION BY k, p ORDER BY o ROWS BETWEEN UNBOUNDED "
            f"PRECEDING AND 1 PRECEDING) AS __mark FROM {events}),\n"
            f"__ok AS (SELECT * FROM __marked WHERE __mark IS NULL OR et + {spec.lateness_ns} >= __mark)\n"
            f"SELECT e.r, {lo_cols}, x.et, x.p, x.o, {value_cols} FROM {entity} e JOIN __ok x "
            f"ON x.k = e.k AND x.et <= e.hi AND x.et > {lo_min}")


def statements(request: AggregateRequest, *, joined: str, hll: Mapping[str, str], dialect: str) -> dict[str, str]:
    """The SQL statements (name → SQL) whose results :func:`finish` combines: ``scalars`` (one row
    per entity row that has an event in some window), ``last<i>`` and ``distinct<i>`` (long form, one
    per such aggregate i). ``joined`` (the rows of :func:`joined_sql`) and each ``hll[feature]`` (of
    :func:`hll_table`) are relation names."""
    if dialect not in DIALECTS:
        raise ValueError(f"dialect must be one of {DIALECTS}, got {dialect!r}")
    windows = request.windows
    shift = (lambda v: f"({v} >> 32)") if dialect == "duckdb" else (lambda v: f"shiftright({v}, 32)")
    dec = "DECIMAL(38,0)"
    scalars: dict[str, str] = {}  # alias → expression; aggregates over the same feature and window share them
    out: dict[str, str] = {}
    for i, a in enumerate(request.aggregates):
        v = f"v{request.features.index(a.feature)}"
        w = windows.index(a.window_ns)
        inside = f"et > lo{w}"
        where = f"FILTER (WHERE {inside})"
        if a.function is Function.LAST_N:
            out[f"last{i}"] = (f"SELECT r, et, p, o, {v} AS v FROM (SELECT r, et, p, o, {v}, row_number() OVER "
                               f"(PARTITION BY r ORDER BY et DESC, p DESC, o DESC) AS __n FROM {joined} WHERE {inside} "
                               f"AND {v} IS NOT NULL) __top WHERE __n <= {a.n}")
            continue
        if a.function is Function.DISTINCT:
            out[f"distinct{i}"] = (f"SELECT r, rho, count(*) AS c FROM (SELECT j.r, h.reg, max(h.rho) AS rho "
                                   f"FROM {joined} j JOIN {hll[a.feature]} h ON j.{v} = h.v WHERE {inside} "
                                   f"GROUP BY j.r, h.reg) __regs GROUP BY r, rho")
            continue
        hi_part, lo_part = shift(v), f"({v} - {shift(v)} * 4294967296)"
        exprs = {
            "n": f"count({v}) {where}",
            "lo": f"min({v}) {where}",
            "hi": f"max({v}) {where}",
            "s": f"sum(CAST({v} AS {dec})) {where}",
            # v² = a²·2⁶⁴ + 2ab·2³² + b² (v = a·2³² + b, 0 ≤ b < 2³²): each part's sum fits
            # DECIMAL(38,0) where the sum of v² might not.
            "qa": f"sum(CAST({hi_part} AS {dec}) * CAST({hi_part} AS {dec})) {where}",
            "qab": f"sum(CAST({hi_part} AS {dec}) * CAST({lo_part} AS {dec})) {where}",
            "qb": f"sum(CAST({lo_part} AS {dec}) * CAST({lo_part} AS {dec})) {where}",
            "vs": f"array_agg({v}) FILTER (WHERE {inside} AND {v} IS NOT NULL)",
        }
        for role in _roles(a, request.integral(a.feature)):
            scalars[f"{role}_{v}_{w}"] = exprs[role]
    columns = ", ".join(f"{expr} AS {alias}" for alias, expr in scalars.items())
    out["scalars"] = f"SELECT r{', ' + columns if columns else ''} FROM {joined} GROUP BY r"
    return out


def _roles(a: Aggregate, integral: bool) -> tuple[str, ...]:
    """The reduced columns a count/sum/mean/min/max/stddev needs (see ``statements``)."""
    fn = a.function
    if fn is Function.MIN:
        return ("n", "lo")
    if fn is Function.MAX:
        return ("n", "hi")
    if fn is Function.COUNT:
        return ("n",)
    if integral:
        return ("n", "s", "qa", "qab", "qb") if fn is Function.STDDEV else ("n", "s")
    return ("n", "vs")


def hll_table(values: Sequence[Any], value_type: pa.DataType) -> pa.Table:
    """Each distinct value's HyperLogLog register and run length (Redis's, over its canonical text)."""
    distinct = [v for v in dict.fromkeys(values) if v is not None]
    regs = [register_of(distinct_text(v)) for v in distinct]
    return pa.table({"v": pa.array(distinct, value_type), "reg": pa.array([r for r, _ in regs], pa.int32()),
                     "rho": pa.array([c for _, c in regs], pa.int32())})


def finish(request: AggregateRequest, n_rows: int, results: Mapping[str, pa.Table]) -> dict[str, pa.Array]:
    """The value of each requested aggregate per entity row (output name → Arrow array), from the
    statements' results: what an online read at the row's time returns (None: absent)."""
    scalars = {row["r"]: row for row in results["scalars"].to_pylist()}
    out: dict[str, pa.Array] = {}
    for i, a in enumerate(request.aggregates):
        values: list[Any] = [None] * n_rows
        if a.function is Function.LAST_N:
            items: dict[int, list[tuple]] = {}
            for row in results[f"last{i}"].to_pylist():
                items.setdefault(row["r"], []).append((row["et"], row["p"], row["o"], row["v"]))
            for r, its in items.items():
                values[r] = [v for *_k, v in sorted(its, key=lambda x: x[:3])]
        elif a.function is Function.DISTINCT:
            hist: dict[int, Counter] = {}
            for row in results[f"distinct{i}"].to_pylist():
                hist.setdefault(row["r"], Counter())[row["rho"]] += row["c"]
            values = [estimate(hist[r]) if r in hist else 0 for r in range(n_rows)]
        else:
            integral = request.integral(a.feature)
            suffix = f"v{request.features.index(a.feature)}_{request.windows.index(a.window_ns)}"
            for r in range(n_rows):
                values[r] = _numeric(a, scalars.get(r), suffix, integral)
        try:
            out[a.output_name] = pa.array(values, request.arrow_type(a))
        except (OverflowError, pa.ArrowInvalid) as exc:
            raise ValueError(f"aggregation group {request.group.name!r}: {a.output_name} is outside its type "
                             f"{request.arrow_type(a)} at some entity row (an Integral sum beyond 64 bits?): "
                             f"{exc}") from None
    return out


def _numeric(a: Aggregate, row: Mapping[str, Any] | None, suffix: str, integral: bool) -> Any:
    n = 0 if row is None else row[f"n_{suffix}"]
    if a.function is Function.COUNT:
        return n
    if n == 0:
        return numeric_value(a, [], integral)  # 0 for sum, absent for the others: as online
    assert row is not None
    if a.function is Function.MIN:
        return row[f"lo_{suffix}"]
    if a.function is Function.MAX:
        return row[f"hi_{suffix}"]
    if integral:
        squares = 0
        if a.function is Function.STDDEV:
            squares = (int(row[f"qa_{suffix}"]) << 64) + (int(row[f"qab_{suffix}"]) << 33) + int(row[f"qb_{suffix}"])
        return numeric_value(a, [NumericTile(n, int(row[f"s_{suffix}"]), 0.0, squares)], True)
    xs = row[f"vs_{suffix}"]
    total = math.fsum(xs)
    if a.function is Function.SUM:
        return total
    if a.function is Function.MEAN:
        return total / n
    exact = [Fraction(x) for x in xs]  # stddev_pop of the exact values
    mean = sum(exact, Fraction(0)) / n
    return math.sqrt(sum(((x - mean) ** 2 for x in exact), Fraction(0)) / n)


class Engine(Protocol):
    """Where the statements run: DuckDB (:class:`DuckDBEngine`) or Spark
    (``sinks/offline/spark_aggregates.py``)."""

    dialect: str

    def rows(self, sql: str) -> pa.Table:
        """The result of ``sql`` as Arrow."""
        ...

    def view(self, sql: str) -> str:
        """A relation name over the rows of ``sql``, evaluated once for the statements that read it."""
        ...

    def table(self, data: pa.Table) -> str:
        """A relation name over Arrow rows."""
        ...


class DuckDBEngine:
    """The DuckDB side: an ``OfflineQuery`` (anything with ``execute`` and ``register_arrow``)."""

    dialect = "duckdb"

    def __init__(self, query: Any) -> None:
        self._query = query

    def rows(self, sql: str) -> pa.Table:
        return self._query.execute(sql, views=False)

    def view(self, sql: str) -> str:
        return self._query.register_arrow(self.rows(sql))

    def table(self, data: pa.Table) -> str:
        return self._query.register_arrow(data)


def compute(engine: Engine, request: AggregateRequest, keys: pa.Array | pa.ChunkedArray, ts_ns: np.ndarray, *,
            source_relation: str, event_time_ns: str) -> dict[str, pa.Array]:
    """The aggregates of ``request`` at each (key, time) row: output name → Arrow array.

    ``source_relation``: the source group's offline rows (every row: the lateness rule needs the
    offsets after the entity times too, and the caller may bound it below, see :func:`lower_bound`);
    ``event_time_ns``: the exact event-time expression over it."""
    d = engine.dialect
    events = engine.view(events_sql(request, source_relation, event_time_ns=event_time_ns, dialect=d))
    entity = engine.table(entity_bounds(request, keys, ts_ns))
    hll: dict[str, str] = {}
    for a in request.aggregates:
        if a.function is Function.DISTINCT and a.feature not in hll:
            j = request.features.index(a.feature)
            values = engine.rows(f"SELECT DISTINCT v{j} AS v FROM {events}").column("v")
            hll[a.feature] = engine.table(hll_table(values.to_pylist(), values.type))
    joined = engine.view(joined_sql(request, events=events, entity=entity))
    results = {name: engine.rows(sql) for name, sql in statements(request, joined=joined, hll=hll, dialect=d).items()}
    return finish(request, len(ts_ns), results)


def lower_bound(request: AggregateRequest, ts_ns: np.ndarray) -> int | None:
    """The oldest event time any row's windows reach (None: a lifetime aggregate, or no rows). Older
    events cannot matter: they are in no window, and they cannot make a newer event too late."""
    if not len(ts_ns) or None in request.windows:
        return None
    t = int(np.min(ts_ns))
    return min(-(-t // SIZE_NS[hop_of(w)]) * SIZE_NS[hop_of(w)] - w for w in request.windows if w is not None) + 1


__all__ = ["AggregateRequest", "DuckDBEngine", "Engine", "compute", "entity_bounds", "events_sql", "finish",
           "hll_table", "joined_sql", "lower_bound", "quote", "statements"]
