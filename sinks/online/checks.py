"""Checks of the arguments of online-store reads and writes: each names the group, record or
feature that is wrong. Shared by the blocking store and the event-loop reader."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from schemas.errors import RecordValidationError
from schemas.group import FeatureGroup
from schemas.names import MAX_RECORD_ID_BYTES


def check_group(group: object) -> None:
    if not isinstance(group, FeatureGroup):
        raise RecordValidationError(
            f"expected a FeatureGroup (from the registry); got {type(group).__name__} {group!r:.80}",
            value=group)


def check_record_id(group: FeatureGroup, record_id: object) -> str:
    if type(record_id) is int:
        record_id = str(record_id)  # Integral identifiers are keyed by their decimal text
    if not isinstance(record_id, str) or not record_id:
        raise RecordValidationError(
            f"feature group {group.name!r}: record identifier {record_id!r} must be a non-empty "
            f"string (or an integer)", group=group.name, feature=group.record_identifier_name,
            value=record_id)
    size = len(record_id.encode("utf-8", "surrogatepass"))
    if size > MAX_RECORD_ID_BYTES:
        raise RecordValidationError(
            f"feature group {group.name!r}: record identifier {record_id[:40]!r}... is {size} bytes; "
            f"at most {MAX_RECORD_ID_BYTES}", group=group.name, feature=group.record_identifier_name,
            value=record_id[:40])
    return record_id


def check_feature_names(group: FeatureGroup, features: object) -> tuple[str, ...] | None:
    if features is None:
        return None
    if isinstance(features, str | bytes) or not isinstance(features, Sequence | set | frozenset):
        raise RecordValidationError(
            f"feature group {group.name!r}: features must be a list of feature names; got "
            f"{type(features).__name__} {features!r:.80}", group=group.name, value=features)
    names = tuple(dict.fromkeys(features))
    unknown = [n for n in names if not isinstance(n, str) or not group.has_feature(n)]
    if unknown:
        raise RecordValidationError(
            f"feature group {group.name!r} has no feature {', '.join(repr(n) for n in unknown)}; its "
            f"features are {', '.join(group.feature_names[:30])}",
            group=group.name, feature=unknown[0] if isinstance(unknown[0], str) else None, value=unknown)
    if not names:
        raise RecordValidationError(
            f"feature group {group.name!r}: features is empty; give at least one feature name or None "
            f"for all", group=group.name, value=features)
    return names


def check_request(n: int, request: object) -> tuple[FeatureGroup, list[Any], object]:
    if not isinstance(request, tuple | list) or len(request) != 3:
        raise RecordValidationError(
            f"batch_get request {n} must be (feature group, record ids, feature names or None); got "
            f"{request!r:.120}", value=request)
    group, ids, features = request
    check_group(group)
    if isinstance(ids, str | bytes) or not isinstance(ids, Sequence):
        raise RecordValidationError(
            f"batch_get request {n} for feature group {group.name!r}: record ids must be a list; got "
            f"{type(ids).__name__} {ids!r:.80}", group=group.name, value=ids)
    return group, list(ids), features


__all__ = ["check_feature_names", "check_group", "check_record_id", "check_request"]
