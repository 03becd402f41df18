"""Messages to offline rows: a list of (message, topic, partition, offset) -> one ``pa.Table``.

Pure and column-oriented: one Python list per column, then one ``pa.array`` per column
(never a dict per row), which is what keeps 1M rows in about a second. A bad value is only
searched for after a column failed to convert, so the fast path pays nothing for the
precise error message.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial
from operator import is_not
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from schemas.ddl import offline_arrow_schema
from schemas.group import FeatureGroup
from schemas.messages import DeleteMessage, PutMessage
from sinks.offline.errors import OfflineRowError

Item = tuple[PutMessage | DeleteMessage, str, int, int]

API_INVOCATION_TIME = "api_invocation_time"
WRITE_TIME = "write_time"
IS_DELETED = "is_deleted"
KAFKA_TOPIC = "_kafka_topic"
KAFKA_PARTITION = "_kafka_partition"
KAFKA_OFFSET = "_kafka_offset"
INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)


def _where(item: Item) -> str:
    _, topic, partition, offset = item
    return f"{topic}[{partition}]@{offset}"


def _row_error(group: FeatureGroup, item: Item, text: str, feature: str | None = None,
               value: object = None) -> OfflineRowError:
    _, topic, partition, offset = item
    return OfflineRowError(f"feature group {group.name!r}, message {_where(item)}: {text}", group=group.name,
                           feature=feature, value=value, topic=topic, partition=partition, offset=offset)


def _check_int(group: FeatureGroup, item: Item, what: str, value: object) -> int:
    if type(value) is not int or not INT64_MIN <= value <= INT64_MAX:
        raise _row_error(group, item, f"{what} must be an integer count of nanoseconds since the Unix "
                         f"epoch within signed 64 bits; got {type(value).__name__} {value!r}",
                         value=value)
    return value


def _check_coordinates(group: FeatureGroup, items: Sequence[Item]) -> None:
    for item in items:
        if not isinstance(item, tuple) or len(item) != 4:
            raise OfflineRowError(f"feature group {group.name!r}: each item must be (message, topic, "
                                  f"partition, offset); got {item!r:.200}", group=group.name, value=item)
        msg, topic, partition, offset = item
        if not isinstance(msg, (PutMessage, DeleteMessage)):
            raise OfflineRowError(f"feature group {group.name!r}: expected a PutMessage or DeleteMessage; "
                                  f"got {type(msg).__name__} {msg!r:.200}", group=group.name, value=msg)
        if not isinstance(topic, str) or not topic:
            raise _row_error(group, item, f"Kafka topic must be a non-empty string; got {topic!r}", value=topic)
        if type(partition) is not int or not 0 <= partition < 2**31:
            raise _row_error(group, item, f"Kafka partition must be an int from 0 to 2^31-1; got "
                             f"{partition!r}", value=partition)
        if type(offset) is not int or not 0 <= offset <= INT64_MAX:
            raise _row_error(group, item, f"Kafka offset must be a non-negative 64-bit int; got {offset!r}",
                             value=offset)


def _identifier(group: FeatureGroup, item: Item, id_type: pa.DataType) -> Any:
    msg = item[0]
    if isinstance(msg, PutMessage):
        value = msg.record.get(group.record_identifier_name)
    else:
        value = msg.id
        if pa.types.is_integer(id_type) and isinstance(value, str):
            try:
                value = int(value)
            except ValueError:
                raise _row_error(group, item, f"delete id {value!r} is not an integer but record identifier "
                                 f"{group.record_identifier_name!r} is Integral",
                                 feature=group.record_identifier_name, value=value) from None
    if value is None:
        raise _row_error(group, item, f"record identifier {group.record_identifier_name!r} is missing or "
                         "null; every row needs it", feature=group.record_identifier_name)
    return value


def _column(group: FeatureGroup, items: Sequence[Item], name: str, values: list[Any],
            typ: pa.DataType) -> pa.Array:
    """Convert one column; on failure find the first bad value and name it."""
    try:
        arr = pa.array(values, type=typ)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, TypeError, ValueError) as exc:
        for i, v in enumerate(values):
            try:
                pa.array([v], type=typ)
            except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, TypeError, ValueError) as one:
                raise _row_error(group, items[i], f"feature {name!r} value {v!r:.200} is not a valid {typ} "
                                 f"({one})", feature=name, value=v) from None
        raise _row_error(group, items[0], f"feature {name!r} could not be converted to {typ}: {exc}",
                         feature=name) from exc
    _reject_non_finite(group, items, name, values, arr)
    return arr


def _reject_non_finite(group: FeatureGroup, items: Sequence[Item], name: str, values: list[Any],
                       arr: pa.Array) -> None:
    # The wire format never carries NaN/Infinity; one here is a bug upstream, and a NaN in the
    # offline history would poison every aggregate over it. Checked vectorised, searched only on a hit.
    flat = arr
    while pa.types.is_list(flat.type) or pa.types.is_fixed_size_list(flat.type) \
            or pa.types.is_large_list(flat.type):
        flat = flat.flatten()
    if not pa.types.is_floating(flat.type) or len(flat) == 0:
        return
    if pc.all(pc.is_finite(flat.fill_null(0.0))).as_py():
        return
    for i, v in enumerate(values):
        vs = v if isinstance(v, (list, tuple)) else [v]
        if any(isinstance(x, float) and not math.isfinite(x) for x in vs):
            raise _row_error(group, items[i], f"feature {name!r} value {v!r:.200} is not a finite number; "
                             "Fractional values must be finite (no NaN or Infinity)", feature=name, value=v)


def _check_collections(group: FeatureGroup, items: Sequence[Item], name: str, values: list[Any],
                       dimension: int | None) -> None:
    # pyarrow would turn the string "abc" into the list ['a', 'b', 'c'], and Vectors are plain
    # lists in Parquet, so shape is checked here rather than trusted to the conversion.
    # Fast path on the set of types/lengths (C loops); the per-value search only on a hit.
    if set(map(type, values)) <= _COLLECTION_TYPES and (
            dimension is None or set(map(len, filter(_NOT_NONE, values))) <= {dimension}):
        return
    for i, v in enumerate(values):
        if v is None:
            continue
        if not isinstance(v, (list, tuple)):
            raise _row_error(group, items[i], f"feature {name!r} is a collection; value {v!r:.200} is a "
                             f"{type(v).__name__}, expected a list", feature=name, value=v)
        if dimension is not None and len(v) != dimension:
            raise _row_error(group, items[i], f"feature {name!r} is a Vector of dimension {dimension}; "
                             f"value has {len(v)} elements", feature=name, value=v)


_COLLECTION_TYPES = frozenset({list, tuple, type(None)})
_NOT_NONE = partial(is_not, None)


def _int_column(group: FeatureGroup, items: Sequence[Item], what: str, values: list[Any]) -> list[int]:
    if set(map(type, values)) == {int} and INT64_MIN <= min(values) and max(values) <= INT64_MAX:
        return values
    return [_check_int(group, it, what, v) for it, v in zip(items, values, strict=True)]


def rows_to_table(group: FeatureGroup, items: Sequence[Item], write_time_ns: int, *,
                  check_coordinates: bool = True) -> pa.Table:
    """One row per message, in ``offline_arrow_schema(group)``.

    Puts give their features; deletes give the identifier and event time with the other
    features null and ``is_deleted`` true. ``write_time_ns`` is when the file is written.
    Missing features of a put are null (a message validated against an older definition);
    a feature the group does not define is an error (the caller's definition is stale).
    ``check_coordinates=False`` skips re-checking (topic, partition, offset) that the caller
    (PartitionWriter) already checked when the items were added.
    """
    schema = offline_arrow_schema(group)
    if type(write_time_ns) is not int:
        raise OfflineRowError(f"feature group {group.name!r}: write_time_ns must be an int; got "
                              f"{write_time_ns!r}", group=group.name, value=write_time_ns)
    if check_coordinates:
        _check_coordinates(group, items)
    n = len(items)
    msgs = [it[0] for it in items]
    feature_names = frozenset(group.feature_names)
    seen_keys: set[Any] = set()
    seen_keys.update(*(m.record.keys() for m in msgs if isinstance(m, PutMessage)
                       and isinstance(m.record, dict)))
    for item in items if not seen_keys <= feature_names or not all(
            isinstance(m.record, dict) for m in msgs if isinstance(m, PutMessage)) else ():
        msg = item[0]
        if isinstance(msg, PutMessage):
            if not isinstance(msg.record, dict):
                raise _row_error(group, item, f"record must be a dict of feature values; got "
                                 f"{type(msg.record).__name__}", value=msg.record)
            if not msg.record.keys() <= feature_names:
                unknown = sorted(str(k) for k in msg.record.keys() - feature_names)
                raise _row_error(group, item, f"record has feature(s) {unknown} the group does not define; "
                                 f"its features are {sorted(feature_names)} (reload the group definition)",
                                 feature=unknown[0], value=unknown)
    event_ns = _int_column(group, items, "event_time_ns", [m.event_time_ns for m in msgs])
    api_ns = _int_column(group, items, "api_invocation_time_ns", [m.api_invocation_time_ns for m in msgs])
    is_put = [isinstance(m, PutMessage) for m in msgs]
    empty: dict[str, Any] = {}
    records = [m.record if p else empty for m, p in zip(msgs, is_put, strict=True)]

    columns: list[pa.Array] = []
    for fld in schema:
        name = fld.name
        if name == group.event_time_name:
            columns.append(_column(group, items, name, event_ns, fld.type))
        elif name == API_INVOCATION_TIME:
            columns.append(_column(group, items, name, api_ns, fld.type))
        elif name == WRITE_TIME:
            columns.append(pa.repeat(pa.scalar(write_time_ns, type=fld.type), n))
        elif name == IS_DELETED:
            columns.append(pa.array([not p for p in is_put], type=fld.type))
        elif name == KAFKA_TOPIC:
            columns.append(pa.array([it[1] for it in items], type=fld.type))
        elif name == KAFKA_PARTITION:
            columns.append(pa.array([it[2] for it in items], type=fld.type))
        elif name == KAFKA_OFFSET:
            columns.append(pa.array([it[3] for it in items], type=fld.type))
        elif name == group.record_identifier_name:
            ids = [r.get(name) for r in records]
            for i, v in enumerate(ids):
                if v is None:  # deletes (id from the message) and missing ids (an error)
                    ids[i] = _identifier(group, items[i], fld.type)
            columns.append(_column(group, items, name, ids, fld.type))
        else:
            values = [r.get(name) for r in records]
            fd = group.feature(name)
            if fd.collection is not None:
                _check_collections(group, items, name, values, fd.dimension)
            columns.append(_column(group, items, name, values, fld.type))
    return pa.Table.from_arrays(columns, schema=schema)


def estimate_row_bytes(msg: PutMessage | DeleteMessage) -> int:
    """Size estimate of one row for byte-based rotation (not exact, just proportional).

    It walks the record, so callers sample it (every Nth row) rather than call it per row.
    """
    if isinstance(msg, DeleteMessage):
        return 64 + len(msg.id)
    return estimate_record_bytes(msg.record)


def estimate_record_bytes(record: dict[str, Any]) -> int:
    """:func:`estimate_row_bytes` of a put's record (the batch path samples its rows with it too)."""
    size = 64
    for v in record.values():
        if isinstance(v, str):
            size += len(v) + 4
        elif isinstance(v, (list, tuple)):
            size += 8 * len(v) + 8
        else:
            size += 8
    return size
