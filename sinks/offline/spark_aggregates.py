"""Point-in-time aggregates on Spark: the statements of ``pit_aggregates.py`` in Spark SQL, over the
source group's Iceberg table as Spark's Iceberg catalog reads it (``featurestream ddl`` prints the
catalog settings), pinned at one snapshot so the answer is DuckDB's to the bit.

The joins, windows and aggregations run in Spark; the driver collects per entity row only the
window's reduced state (count, exact integer sums, min, max, the N last values, the HyperLogLog
register histogram, and for Fractional sum/mean/stddev the window's values), and finishes each
value with the same pure code as DuckDB (``pit_aggregates.finish``). The HyperLogLog register of
each distinct value of a distinct-counted feature is computed on the driver (Redis's hash in
Python) and joined in as a small table.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pyarrow as pa

from sinks.offline.pit_aggregates import AggregateRequest, compute, lower_bound

_names = itertools.count()


class SparkEngine:
    """``pit_aggregates.Engine`` over a ``pyspark.sql.SparkSession``: temporary views, results as Arrow."""

    dialect = "spark"

    def __init__(self, spark: Any) -> None:
        self.spark = spark
        self.views: list[str] = []
        self.cached: list[Any] = []

    def _name(self) -> str:
        name = f"__fs_agg_{next(_names)}"
        self.views.append(name)
        return name

    def rows(self, sql: str) -> pa.Table:
        return self.spark.sql(sql).toArrow()

    def view(self, sql: str) -> str:
        name = self._name()
        frame = self.spark.sql(sql).cache()  # computed by the first statement that reads it, then reused
        self.cached.append(frame)
        frame.createOrReplaceTempView(name)
        return name

    def table(self, data: pa.Table) -> str:
        name = self._name()
        self.spark.createDataFrame(data).createOrReplaceTempView(name)
        return name

    def drop_views(self) -> None:
        for name in self.views:
            self.spark.catalog.dropTempView(name)
        for frame in self.cached:
            frame.unpersist()
        self.views.clear()
        self.cached.clear()


def spark_aggregates(spark: Any, table: str, request: AggregateRequest, keys: pa.Array | pa.ChunkedArray,
                     ts_ns: np.ndarray, *, snapshot_id: int | None = None) -> dict[str, pa.Array]:
    """The aggregates of ``request`` at each (key, time) row, computed by Spark from the source
    group's Iceberg ``table`` (as Spark names it, e.g. ``featurestream.`prefix`.`group```) at
    ``snapshot_id`` (None: its current snapshot). Output name → Arrow array, as DuckDB's."""
    relation = table if snapshot_id is None else f"{table} VERSION AS OF {int(snapshot_id)}"
    since = lower_bound(request, ts_ns)
    if since is not None:
        relation = f"(SELECT * FROM {relation} WHERE _event_time_ns >= {since})"
    engine = SparkEngine(spark)
    try:
        return compute(engine, request, keys, ts_ns, source_relation=relation, event_time_ns="_event_time_ns")
    finally:
        engine.drop_views()


__all__ = ["SparkEngine", "spark_aggregates"]
