"""Query results as Athena writes and pages them. Pure.

Athena writes a query's result as CSV to ``<OutputLocation>/<QueryExecutionId>.csv``: a header
row, then every value double-quoted (``"`` doubled inside), and a null as an empty, unquoted
field, so that ``""`` (an empty string) and null stay apart. Values are Athena's text forms:
``true``/``false``, timestamps as ``2021-10-02 12:00:00.000``, arrays as ``[a, b]``. A double is
written in its shortest exact form, so ``pandas.read_csv`` reads back the very number.
GetQueryResults answers from that file, in pages; its first page starts with the header row.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import pyarrow as pa

MAX_PAGE = 1000  # GetQueryResults' MaxResults bound (the service model's MaxQueryResults)


def athena_type(t: pa.DataType) -> str:
    """The type name Athena shows for an Arrow type (ColumnInfo.Type)."""
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "varchar"
    if pa.types.is_int64(t) or pa.types.is_uint32(t):
        return "bigint"
    if pa.types.is_int32(t) or pa.types.is_uint16(t):
        return "integer"
    if pa.types.is_int16(t) or pa.types.is_uint8(t):
        return "smallint"
    if pa.types.is_int8(t):
        return "tinyint"
    if pa.types.is_uint64(t):
        return "decimal"
    if pa.types.is_float64(t):
        return "double"
    if pa.types.is_float32(t):
        return "real"
    if pa.types.is_boolean(t):
        return "boolean"
    if pa.types.is_timestamp(t):
        return "timestamp with time zone" if t.tz else "timestamp"
    if pa.types.is_date(t):
        return "date"
    if pa.types.is_decimal(t):
        return "decimal"
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return f"array({athena_type(t.value_type)})"
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return "varbinary"
    return "varchar"


def column_info(schema: pa.Schema) -> list[dict[str, Any]]:
    """GetQueryResults' ResultSetMetadata.ColumnInfo for a result schema."""
    out = []
    for f in schema:
        kind = athena_type(f.type)
        info: dict[str, Any] = {"CatalogName": "hive", "SchemaName": "", "TableName": "", "Name": f.name,
                                "Label": f.name, "Type": kind, "Precision": 0, "Scale": 0,
                                "Nullable": "UNKNOWN", "CaseSensitive": kind == "varchar"}
        if pa.types.is_decimal(f.type):
            info["Precision"], info["Scale"] = f.type.precision, f.type.scale
        out.append(info)
    return out


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        return repr(value)
    if isinstance(value, dt.datetime):
        text = value.strftime("%Y-%m-%d %H:%M:%S.") + f"{value.microsecond // 1000:03d}"
        return text + " UTC" if value.tzinfo is not None else text
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return "[" + ", ".join("null" if v is None else _text(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}={'null' if v is None else _text(v)}" for k, v in value.items()) + "}"
    if isinstance(value, bytes):
        return value.hex(" ")
    return str(value)


def _field(value: str | None) -> str:
    return "" if value is None else '"' + value.replace('"', '""') + '"'


def to_csv(table: pa.Table) -> bytes:
    """The result file Athena writes for ``table`` (header, then one line per row)."""
    columns = [table.column(i).to_pylist() for i in range(table.num_columns)]
    lines = [",".join(_field(name) for name in table.column_names)]
    for row in zip(*columns, strict=True):
        lines.append(",".join(_field(None if v is None else _text(v)) for v in row))
    return ("\n".join(lines) + "\n").encode("utf-8")


def parse_csv(data: bytes) -> list[list[str | None]]:
    """Rows of a file :func:`to_csv` wrote, header first; an unquoted empty field is None."""
    text = data.decode("utf-8")
    rows: list[list[str | None]] = []
    row: list[str | None] = []
    i, n = 0, len(text)
    while i < n:
        if text[i] == '"':
            j, parts = i + 1, []
            while True:
                k = text.index('"', j)
                parts.append(text[j:k])
                if k + 1 < n and text[k + 1] == '"':
                    parts.append('"')
                    j = k + 2
                    continue
                i = k + 1
                break
            row.append("".join(parts))
        else:
            row.append(None)
        if i >= n or text[i] == "\n":
            rows.append(row)
            row = []
        i += 1  # past ',' or '\n'
    return rows


def page(rows: list[list[str | None]], offset: int, limit: int) -> list[dict[str, Any]]:
    """GetQueryResults' ``Rows`` from ``offset`` (0 is the header row): at most ``limit``."""
    return [{"Data": [{} if v is None else {"VarCharValue": v} for v in row]}
            for row in rows[offset:offset + limit]]


__all__ = ["MAX_PAGE", "athena_type", "column_info", "page", "parse_csv", "to_csv"]
