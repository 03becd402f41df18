"""Feature values ⇄ Redis hash fields: one field per non-null feature, value = JSON text.

JSON (via orjson) keeps types apart on the way back ("42" the String vs 42 the Integral)
and is readable by any language. Reads check each decoded value against its definition, so
a hash someone else wrote yields a CorruptRecordError naming the feature, not a wrong answer.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import orjson

from schemas.errors import RecordValidationError
from schemas.group import FeatureGroup
from schemas.names import MAX_VALUE_BYTES
from schemas.types import INT64_MAX, INT64_MIN, CollectionType, FeatureDefinition, ScalarType
from sinks.online.errors import CorruptRecordError

META_PREFIX = "__"  # meta fields (__et, __seq, __exp, __del, __v, __life); feature names cannot start with '_'


def _show(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} chars)"


def _has_non_finite(value: Any) -> bool:
    # orjson writes NaN/Infinity as null, which would silently lose the value.
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, list | tuple):
        return any(isinstance(v, float) and not math.isfinite(v) for v in value)
    return False


def encode_features(group: FeatureGroup, record_id: str, record: Mapping[str, Any]) -> list[str]:
    """``[name, json text, name, json text, ...]`` for every non-null feature of a put's record.

    Raises RecordValidationError for an unknown feature, a non-finite number, a value JSON
    cannot hold, or a value over the size limit.
    """
    if not isinstance(record, Mapping):
        raise RecordValidationError(
            f"feature group {group.name!r}, record {record_id!r}: the record must be a mapping of "
            f"feature name to value; got {type(record).__name__}", group=group.name, value=record)
    out: list[str] = []
    for name, value in record.items():
        if value is None:
            continue  # null features are simply absent: a put is a full overwrite
        if not isinstance(name, str) or not group.has_feature(name):
            raise RecordValidationError(
                f"feature group {group.name!r}, record {record_id!r}: unknown feature {name!r}; "
                f"valid features are {', '.join(group.feature_names[:20])}",
                group=group.name, feature=name if isinstance(name, str) else None, value=value)
        if _has_non_finite(value):
            raise RecordValidationError(
                f"feature group {group.name!r}, record {record_id!r}, feature {name!r}: value "
                f"{_show(value)} is not a finite number (NaN and Infinity cannot be stored)",
                group=group.name, feature=name, value=value)
        try:
            encoded = orjson.dumps(value)
        except (TypeError, orjson.JSONEncodeError) as exc:
            raise RecordValidationError(
                f"feature group {group.name!r}, record {record_id!r}, feature {name!r}: value "
                f"{_show(value)} of type {type(value).__name__} cannot be stored ({exc}); valid "
                f"values are strings, 64-bit integers, finite floats and lists of them",
                group=group.name, feature=name, value=value) from None
        if len(encoded) > MAX_VALUE_BYTES:
            raise RecordValidationError(
                f"feature group {group.name!r}, record {record_id!r}, feature {name!r}: value is "
                f"{len(encoded)} bytes encoded; at most {MAX_VALUE_BYTES} bytes",
                group=group.name, feature=name, value=_show(value))
        out.append(name)
        out.append(encoded.decode("utf-8"))
    return out


def pack_checked_features(record: Mapping[str, Any]) -> bytes:
    """``pack_fields(encode_features(...))`` for a record that ``schemas`` has already checked
    against its group (known features, finite numbers, 64-bit integers, bounded sizes), as
    everything routed off a topic has been. Skipping the second round of checks is most of
    the online processor's encoding cost."""
    out: list[str] = []
    dumps = orjson.dumps
    for name, value in record.items():
        if value is not None:
            out.append(name)
            out.append(dumps(value).decode())
    return dumps(out)


def pack_fields(fields: list[str]) -> bytes:
    """The fields of :func:`encode_features` as the one JSON-array argument the Lua script takes."""
    return orjson.dumps(fields)


def _scalar_ok(scalar: ScalarType, value: Any) -> bool:
    if scalar is ScalarType.STRING:
        return isinstance(value, str)
    if scalar is ScalarType.INTEGRAL:
        return type(value) is int and INT64_MIN <= value <= INT64_MAX
    # Fractional: JSON has one number type; 2.0 may come back as 2.
    return type(value) in (int, float) and math.isfinite(value)


def _conforms(definition: FeatureDefinition, value: Any) -> bool:
    if definition.collection is None:
        return _scalar_ok(definition.type, value)
    if not isinstance(value, list):
        return False
    if definition.collection is CollectionType.VECTOR and len(value) != definition.dimension:
        return False
    return all(_scalar_ok(definition.type, v) for v in value)


def _as_fractional(definition: FeatureDefinition, value: Any) -> Any:
    if definition.type is not ScalarType.FRACTIONAL:
        return value
    if definition.collection is None:
        return float(value)
    return [float(v) for v in value]


def decode_value(group: FeatureGroup, record_id: str, definition: FeatureDefinition, raw: bytes) -> Any:
    """The typed value of one stored field; CorruptRecordError if it is not what the definition says."""
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise CorruptRecordError(
            f"feature group {group.name!r}, record {record_id!r}, feature {definition.name!r}: "
            f"stored value {_show(raw)} is not JSON; expected a JSON-encoded {definition.describe()} "
            f"(the key was not written by featurestream: delete it or wipe and replay the group)",
            group=group.name, record_id=record_id, feature=definition.name, value=raw) from None
    if not _conforms(definition, value):
        raise CorruptRecordError(
            f"feature group {group.name!r}, record {record_id!r}, feature {definition.name!r}: "
            f"stored value {_show(value)} is not a {definition.describe()} (the key was not written "
            f"by featurestream, or under an incompatible definition: delete it or wipe and replay "
            f"the group)", group=group.name, record_id=record_id, feature=definition.name, value=raw)
    return _as_fractional(definition, value)


def decode_int_meta(group: FeatureGroup, record_id: str, field: str, raw: bytes | None) -> int | None:
    """A decimal meta field (``__et``, ``__exp``) as int; CorruptRecordError if it is not decimal."""
    if raw is None:
        return None
    text = raw.decode("ascii", "replace") if isinstance(raw, bytes) else str(raw)
    body = text[1:] if text.startswith("-") else text
    if not body.isdigit() or not body.isascii():
        raise CorruptRecordError(
            f"feature group {group.name!r}, record {record_id!r}: meta field {field} is "
            f"{_show(raw)}; expected integer nanoseconds since the epoch (the key was not written "
            f"by featurestream: delete it or wipe and replay the group)",
            group=group.name, record_id=record_id, feature=field, value=raw)
    return int(text)


def _field_name(name: bytes | str) -> str:
    return name.decode("utf-8", "surrogateescape") if isinstance(name, bytes) else name


def of_life(group: FeatureGroup, life: bytes | str | None) -> bool:
    """Whether a stored ``__life`` belongs to ``group``'s life (a hash written before lives existed
    has none, and is taken as the current life's): a record of a deleted group of the same name is
    not served (write_if_newer.lua, "Lives")."""
    if life is None:
        return True
    return (life.decode("ascii", "replace") if isinstance(life, bytes) else life) == group.life


def decode_record(group: FeatureGroup, record_id: str, raw: Mapping[bytes | str, bytes | None],
                  now_ns: int) -> tuple[dict[str, Any], int | None] | None:
    """Turn a stored hash (HGETALL, or HMGET zipped with its field names) into ``(record, expires_at)``.

    None when there is nothing to serve: no such key, a tombstone (soft delete, expired put),
    or an expires-at at or before ``now_ns`` (Redis may not have evicted the key yet). Fields
    that are not features of ``group`` are ignored; malformed ones raise CorruptRecordError.
    """
    fields = {_field_name(k): v for k, v in raw.items() if v is not None}
    if not fields:
        return None
    et = decode_int_meta(group, record_id, "__et", fields.get("__et"))
    if et is None:
        raise CorruptRecordError(
            f"feature group {group.name!r}, record {record_id!r}: the stored hash has fields "
            f"{', '.join(sorted(fields)[:10])} but no __et meta field; featurestream always writes "
            f"__et (the key was written by something else: delete it or wipe and replay the group)",
            group=group.name, record_id=record_id)
    if fields.get("__del") is not None or not of_life(group, fields.get("__life")):
        return None
    expires_at = decode_int_meta(group, record_id, "__exp", fields.get("__exp"))
    if expires_at is not None and expires_at <= now_ns:
        return None
    record: dict[str, Any] = {}
    for name, value in fields.items():
        if name.startswith(META_PREFIX) or not group.has_feature(name):
            continue
        record[name] = decode_value(group, record_id, group.feature(name), value)
    return record, expires_at
