"""JSON Schema (draft 2020-12) of a put record of a group, for API docs and client-side checks.

It describes the canonical record (what ``wire`` carries): String -> string, Integral ->
integer in signed 64-bit range, Fractional -> number, collections -> arrays. The validator
is more lenient on input (it also coerces '42' to 42, numpy values, bools), so a record that
passes this schema always passes validation, not necessarily the reverse.
"""

from __future__ import annotations

from typing import Any

from schemas.group import FeatureGroup
from schemas.types import INT64_MAX, INT64_MIN, CollectionType, FeatureDefinition, ScalarType

DRAFT = "https://json-schema.org/draft/2020-12/schema"
ISO_UTC_PATTERN = (r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?"
                   r"([Zz]|[+-][0-9]{2}:?[0-9]{2})$")
MAX_EPOCH_SECONDS = 253_402_300_800


def _scalar(t: ScalarType) -> dict[str, Any]:
    if t is ScalarType.STRING:
        return {"type": "string"}
    if t is ScalarType.INTEGRAL:
        return {"type": "integer", "minimum": INT64_MIN, "maximum": INT64_MAX}
    return {"type": "number"}


def _feature(group: FeatureGroup, fd: FeatureDefinition) -> dict[str, Any]:
    if fd.name == group.event_time_name:
        iso = {"type": "string", "pattern": ISO_UTC_PATTERN}
        seconds = {"type": "number", "minimum": 0, "exclusiveMaximum": MAX_EPOCH_SECONDS}
        return {"description": "event time: ISO-8601 with zone, or epoch seconds",
                "anyOf": [iso, seconds] if fd.type is ScalarType.STRING else [seconds, iso]}
    if fd.collection is None:
        schema = _scalar(fd.type)
        if fd.name == group.record_identifier_name and fd.type is ScalarType.STRING:
            schema["minLength"] = 1
        return schema if fd.name == group.record_identifier_name else {"anyOf": [schema, {"type": "null"}]}
    arr: dict[str, Any] = {"type": "array", "items": _scalar(fd.type)}
    if fd.collection is CollectionType.SET:
        arr["uniqueItems"] = True
    if fd.collection is CollectionType.VECTOR:
        arr["minItems"] = arr["maxItems"] = fd.dimension
    return {"anyOf": [arr, {"type": "null"}]}


def record_json_schema(group: FeatureGroup) -> dict[str, Any]:
    return {
        "$schema": DRAFT,
        "$id": f"featurestream:{group.name}:v{group.version}",
        "title": f"record of feature group {group.name}",
        "description": group.description or f"a put record of feature group {group.name}",
        "type": "object",
        "properties": {fd.name: {**_feature(group, fd), "title": fd.describe()} for fd in group.features},
        "required": [group.record_identifier_name, group.event_time_name],
        "additionalProperties": False,
    }
