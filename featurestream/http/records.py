"""SageMaker's record wire form <-> featurestream records, pure.

On the wire a record is a list of ``{"FeatureName": ..., "ValueAsString": ...}`` (or
``"ValueAsStringList"`` for collections). Going in, values stay text and the group's
validator coerces them (it accepts decimal text for Integral/Fractional), so an HTTP put is
checked by exactly the same code as an SDK put. Going out, every value becomes text again.
"""

from __future__ import annotations

import math
import re
from typing import Any

from featurestream.http.errors import ApiError
from schemas.group import FeatureGroup
from schemas.names import name_is_valid
from schemas.ttl import Ttl
from schemas.types import ScalarType
from schemas.validate import compile_validator

_ARN_RE = re.compile(r"arn:aws[a-z\-]*:sagemaker:[a-z0-9\-]*:[0-9]{12}:feature-group/(?P<name>.+)")
ACCOUNT_ID = "000000000000"  # featurestream has no accounts; ARNs need 12 digits
_MAX_NAME_IN_ERROR = 80


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= _MAX_NAME_IN_ERROR else f"{text[:_MAX_NAME_IN_ERROR]}... ({len(text)} chars)"


def group_name(value: object, what: str = "FeatureGroupName") -> str:
    """A feature group name, or the name inside a feature-group ARN; ValidationError otherwise.

    Checked before anything touches Kafka, Redis or S3: a name can never become a path or key
    outside its own (only letters, digits, '-' and '_' pass).
    """
    if not isinstance(value, str):
        raise ApiError.validation(f"{what} must be a string; got {_short(value)}")
    m = _ARN_RE.fullmatch(value)
    name = m.group("name") if m else value
    if not name_is_valid(name):
        raise ApiError.validation(
            f"{what} {_short(value)} is invalid: a feature group name is 1-64 characters, starts and ends "
            "with a letter or digit, with only letters, digits, '-' and '_' between (or a feature-group ARN)")
    return name


def group_arn(name: str, region: str) -> str:
    return f"arn:aws:sagemaker:{region}:{ACCOUNT_ID}:feature-group/{name}"


def ttl_seconds(value: object, what: str = "TtlDuration") -> int | None:
    """``{"Unit": "Days", "Value": 7}`` -> seconds; None when absent."""
    if value is None:
        return None
    return parse_ttl(value, what).seconds


def parse_ttl(value: object, what: str = "TtlDuration") -> Ttl:
    if not isinstance(value, dict) or set(value) - {"Unit", "Value"}:
        raise ApiError.validation(f'{what} must be an object like {{"Unit": "Days", "Value": 7}}; got '
                                  f"{_short(value)}")
    try:
        return Ttl.from_api(value)
    except (ValueError, TypeError) as exc:
        raise ApiError.validation(f"{what}: {exc}") from None


def record_from_wire(group: FeatureGroup, items: object, what: str = "Record") -> dict[str, Any]:
    """Turn the wire list into ``{feature: value}`` for the validator; ValidationError on bad shape."""
    if not isinstance(items, list) or not items:
        raise ApiError.validation(
            f"feature group {group.name!r}: {what} must be a non-empty list of "
            f'{{"FeatureName": ..., "ValueAsString": ...}}; got {_short(items)}')
    out: dict[str, Any] = {}
    et_fractional = group.event_time.type is ScalarType.FRACTIONAL
    for n, item in enumerate(items):
        if not isinstance(item, dict):
            raise ApiError.validation(f"feature group {group.name!r}: {what}[{n}] must be an object with "
                                      f"FeatureName and ValueAsString; got {_short(item)}")
        name = item.get("FeatureName")
        if not isinstance(name, str):
            raise ApiError.validation(f"feature group {group.name!r}: {what}[{n}] has no FeatureName string; "
                                      f"got {_short(item)}")
        if name in out:
            raise ApiError.validation(f"feature group {group.name!r}: feature {name!r} appears twice in {what}")
        has_text = "ValueAsString" in item
        # A well-formed item has exactly two fields, FeatureName and one value: _check_fields (which builds
        # sets to name what is wrong) runs only for an item that is not, and always raises.
        if len(item) != 2 or not (has_text or "ValueAsStringList" in item):
            _check_fields(group, name, item)
        if has_text:
            value = item["ValueAsString"]
            if not isinstance(value, str):
                raise ApiError.validation(f"feature group {group.name!r}, feature {name!r}: ValueAsString must "
                                          f"be a string; got {_short(value)}")
            if et_fractional and name == group.event_time_name:
                # The validator would keep epoch text as text; the wire format stores a number.
                value = _epoch_number(value)
        else:
            value = item["ValueAsStringList"]
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ApiError.validation(f"feature group {group.name!r}, feature {name!r}: ValueAsStringList "
                                          f"must be a list of strings; got {_short(value)}")
            if group.has_feature(name) and group.feature(name).is_scalar:
                raise ApiError.validation(f"feature group {group.name!r}, feature {name!r} is "
                                          f"{group.feature(name).describe()}: use ValueAsString, not "
                                          "ValueAsStringList")
        out[name] = value
    return out


def _check_fields(group: FeatureGroup, name: str, item: dict[str, Any]) -> None:
    """ValidationError naming what is wrong with the fields of a Record item (FeatureName is there)."""
    unknown = set(item) - {"FeatureName", "ValueAsString", "ValueAsStringList"}
    if unknown:
        raise ApiError.validation(f"feature group {group.name!r}, feature {name!r}: unknown field(s) "
                                  f"{', '.join(sorted(unknown))}; valid: ValueAsString or ValueAsStringList")
    if ("ValueAsString" in item) == ("ValueAsStringList" in item):
        raise ApiError.validation(f"feature group {group.name!r}, feature {name!r}: give exactly one of "
                                  "ValueAsString (scalars) and ValueAsStringList (List, Set, Vector)")


def event_time_from_wire(group: FeatureGroup, text: str) -> Any:
    """A DeleteRecord EventTime (always text on the wire) in the type of the group's event time."""
    return _epoch_number(text) if group.event_time.type is ScalarType.FRACTIONAL else text


def _epoch_number(text: str) -> Any:
    try:
        number = float(text)
    except ValueError:
        return text  # the validator explains what an event time must look like
    return number if math.isfinite(number) else text


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, float):
        return repr(value)
    return str(value)


def record_to_wire(record: dict[str, Any]) -> list[dict[str, Any]]:
    """``{feature: value}`` (non-null features only, as the online store answers) -> wire list."""
    out = []
    for name, value in record.items():
        if value is None:
            continue
        if isinstance(value, list | tuple):
            out.append({"FeatureName": name, "ValueAsStringList": [_text(v) for v in value]})
        else:
            out.append({"FeatureName": name, "ValueAsString": _text(value)})
    return out


def string_list(value: object, what: str, *, max_items: int | None = None) -> list[str]:
    """A JSON list of strings (feature names, identifiers, target stores), bounded."""
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ApiError.validation(f"{what} must be a list of strings; got {_short(value)}")
    if max_items is not None and len(value) > max_items:
        raise ApiError.validation(f"{what} has {len(value)} items; at most {max_items} are allowed")
    return value


def record_id(group: FeatureGroup, text: Any) -> str:
    """The identifier as the online store keys it (Integral ids by their canonical decimal text)."""
    if not isinstance(text, str) or not text:
        raise ApiError.validation(f"feature group {group.name!r}: RecordIdentifierValueAsString must be a "
                                  f"non-empty string; got {_short(text)}")
    if group.record_identifier.type is ScalarType.INTEGRAL:
        _, rid = compile_validator(group).record_id(text)
        return rid
    return text
