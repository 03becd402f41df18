"""The offline table's schema: Hive DDL for SQL engines and the matching Arrow schema for writers.

Both come from one column list (:func:`offline_columns`) so the Parquet files and the
table definition cannot drift apart.
"""

from __future__ import annotations

from typing import Any

from schemas.errors import DefinitionError
from schemas.group import FeatureGroup
from schemas.names import PARTITION_COLUMNS, offline_data_uri
from schemas.types import CollectionType, FeatureDefinition, ScalarType

_HIVE_SCALAR = {ScalarType.STRING: "STRING", ScalarType.INTEGRAL: "BIGINT", ScalarType.FRACTIONAL: "DOUBLE"}

# Columns the offline writer adds after the features, in this order.
EXTRA_COLUMNS: tuple[tuple[str, str], ...] = (
    ("api_invocation_time", "TIMESTAMP"),
    ("write_time", "TIMESTAMP"),
    ("is_deleted", "BOOLEAN"),
    ("_kafka_topic", "STRING"),
    ("_kafka_partition", "INT"),
    ("_kafka_offset", "BIGINT"),
)


def hive_type(group: FeatureGroup, fd: FeatureDefinition) -> str:
    """Hive type of a feature column; the event time is a TIMESTAMP (stored as UTC)."""
    if fd.name == group.event_time_name:
        return "TIMESTAMP"
    scalar = _HIVE_SCALAR[fd.type]
    if fd.collection is CollectionType.VECTOR:
        return "ARRAY<DOUBLE>"
    return f"ARRAY<{scalar}>" if fd.collection is not None else scalar


def offline_columns(group: FeatureGroup) -> list[tuple[str, str]]:
    """(name, Hive type) of every data column, in file order (partition columns excluded)."""
    return [(fd.name, hive_type(group, fd)) for fd in group.features] + list(EXTRA_COLUMNS)


def quote_identifier(name: str) -> str:
    """Backtick-quote an identifier (a backtick inside is doubled, as Hive/Spark expect)."""
    return "`" + name.replace("`", "``") + "`"


def quote_string(text: str) -> str:
    """Single-quoted Hive string literal (backslash escapes, as Hive's lexer reads them)."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def hive_ddl(group: FeatureGroup, location: str | None = None) -> str:
    """CREATE EXTERNAL TABLE statement for the group's offline table.

    ``location`` is the table location (default: the group's resolved ``offline_uri``); the
    data lives under ``<location>/data`` (a location already ending in /data is used as is).
    """
    table_uri = location if location is not None else group.offline_uri
    if not table_uri:
        raise DefinitionError(f"feature group {group.name!r} has no offline store location; pass "
                              "location= or enable the offline store", group=group.name)
    cols = ",\n  ".join(f"{quote_identifier(n)} {t}" for n, t in offline_columns(group))
    parts = ", ".join(f"{quote_identifier(p)} STRING" for p in PARTITION_COLUMNS)
    return (f"CREATE EXTERNAL TABLE IF NOT EXISTS {quote_identifier(group.name)} (\n  {cols}\n)\n"
            f"PARTITIONED BY ({parts})\n"
            f"STORED AS PARQUET\n"
            f"LOCATION {quote_string(offline_data_uri(table_uri))}")


def offline_arrow_schema(group: FeatureGroup) -> Any:
    """pyarrow schema of the offline Parquet files, column for column the same as :func:`hive_ddl`."""
    import pyarrow as pa

    ts = pa.timestamp("ns", tz="UTC")
    scalar = {ScalarType.STRING: pa.string(), ScalarType.INTEGRAL: pa.int64(),
              ScalarType.FRACTIONAL: pa.float64()}
    fields = []
    for fd in group.features:
        if fd.name == group.event_time_name:
            t = ts
        elif fd.collection is not None:
            t = pa.list_(scalar[fd.type])
        else:
            t = scalar[fd.type]
        fields.append(pa.field(fd.name, t))
    extra = {"api_invocation_time": ts, "write_time": ts, "is_deleted": pa.bool_(),
             "_kafka_topic": pa.string(), "_kafka_partition": pa.int32(), "_kafka_offset": pa.int64()}
    fields.extend(pa.field(n, extra[n]) for n, _ in EXTRA_COLUMNS)
    return pa.schema(fields)
