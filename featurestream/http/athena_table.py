"""A group's offline table as Athena shows SageMaker's: the view the Athena-compatible API reads. Pure.

SageMaker's Glue table of a feature group differs from featurestream's own SQL view
(``sinks/offline/query.py``) in ways notebooks rely on:
- column names are lower case (Glue lower-cases them; queries may name them in any case);
- the event time has its feature's type: a Fractional event time is a ``double`` (epoch seconds,
  the notebooks' time-travel query compares it with a bare number), a String one is ``varchar``
  ISO-8601 text (``from_iso8601_timestamp`` turns it into a timestamp);
- ``api_invocation_time`` and ``write_time`` are ``timestamp`` (UTC, no zone), ``is_deleted`` a boolean;
- featurestream's bookkeeping columns (``_kafka_*``) are not there.
"""

from __future__ import annotations

from schemas.group import FeatureGroup
from schemas.types import ScalarType
from sinks.offline.query_source import quote_ident

_HIDDEN_PREFIX = "_kafka_"
_TIMESTAMPS = ("api_invocation_time", "write_time")


class TableShapeError(ValueError):
    """A group whose table cannot be shown as Athena shows it (two columns equal but for case)."""


def _event_time_sql(group: FeatureGroup, column: str) -> str:
    ns = f"epoch_ns({column})"
    if group.event_time.type is ScalarType.FRACTIONAL:
        # whole seconds and the fraction converted apart: the double is the one that was put
        return f"CAST({ns} // 1000000000 AS DOUBLE) + CAST({ns} % 1000000000 AS DOUBLE) / 1e9"
    if group.event_time.type is ScalarType.INTEGRAL:
        return f"{ns} // 1000000000"
    # ISO-8601 text with 'Z' and the shortest exact fraction (schemas.eventtime.format_iso)
    return (f"regexp_replace(strftime({column}, '%Y-%m-%dT%H:%M:%S.%n'), '\\.?0+$', '') || 'Z'")


def view_sql(group: FeatureGroup, columns: list[str], source: str) -> str:
    """``SELECT ... FROM source`` in Athena's shape; ``columns`` are the source's columns in order."""
    seen: dict[str, str] = {}
    parts = []
    for name in columns:
        if name.startswith(_HIDDEN_PREFIX):
            continue
        lower = name.lower()
        if lower in seen:
            raise TableShapeError(f"feature group {group.name!r} has features {seen[lower]!r} and {name!r}, which "
                                  "Athena's lower-case column names cannot tell apart")
        seen[lower] = name
        col = quote_ident(name)
        if name == group.event_time_name:
            expr = _event_time_sql(group, col)
        elif name in _TIMESTAMPS:
            expr = f"CAST({col} AS TIMESTAMP)"
        else:
            expr = col
        parts.append(f"{expr} AS {quote_ident(lower)}")
    return f"SELECT {', '.join(parts)} FROM {source}"


__all__ = ["TableShapeError", "view_sql"]
