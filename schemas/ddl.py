"""The offline rows' Arrow schema (the "view" shape): the group's features, then the columns the
offline writer adds. Writers build rows in it (``sinks/offline/rows.py``), the Iceberg table's schema
derives from it (``sinks/offline/table_format.py``) and queries return it.

The Hive DDL that was built here went with the Hive-partitioned layout; ``featurestream ddl`` prints
what Spark, Trino and Athena need to read the Iceberg table (``sinks/offline/engine_ddl.py``).
"""

from __future__ import annotations

from typing import Any

from schemas.group import FeatureGroup
from schemas.types import ScalarType

# Columns the offline writer adds after the features, in this order.
EXTRA_COLUMNS: tuple[str, ...] = ("api_invocation_time", "write_time", "is_deleted", "_kafka_topic",
                                  "_kafka_partition", "_kafka_offset")


def offline_arrow_schema(group: FeatureGroup) -> Any:
    """pyarrow schema of the group's offline rows: its features in definition order (the event time as
    ``timestamp[ns, UTC]``, collections as lists), then :data:`EXTRA_COLUMNS`."""
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
    fields.extend(pa.field(n, extra[n]) for n in EXTRA_COLUMNS)
    return pa.schema(fields)
