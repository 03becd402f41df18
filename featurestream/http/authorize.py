"""Which feature groups a request touches, and refusing it when its key may not. Pure.

Checked after the signature and before anything runs, and before the groups are looked up: a
key learns nothing about a group it may not use, not even whether it exists.

A batch (BatchGetRecord, BatchWriteRecord) naming any group the key may not use is refused
whole with AccessForbidden. Per-entry errors were the other choice the API offers; they were
not taken because (1) a refused entry of a batch write would sit in ``Errors`` beside entries
that were published, and a client that does not read ``Errors`` would lose writes silently,
whereas a whole refusal is an exception no client can miss; (2) nothing is published or read
before the answer, so a refused batch has no side effect to reason about; (3) a client never
has to tell "this key may not" from "this record failed" inside an otherwise successful answer.
ListFeatureGroups is not refused: it lists the groups the key may read.
"""

from __future__ import annotations

from typing import Any

from featurestream.http.errors import ApiError
from featurestream.http.permissions import OPERATION_ACTIONS, Action, Permissions, refusal
from featurestream.http.records import group_name

_BATCH_LISTS = {"BatchGetRecord": "Identifiers", "BatchWriteRecord": "Entries"}


def batch_groups(operation: str, body: dict[str, Any]) -> list[str]:
    """The valid group names a batch request names (malformed entries are left to validation)."""
    entries = body.get(_BATCH_LISTS[operation])
    if not isinstance(entries, list):
        return []
    names = []
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        try:
            names.append(group_name(entry.get("FeatureGroupName")))
        except ApiError:
            continue  # the operation itself reports the invalid name
    return names


def authorize(permissions: Permissions, operation: str, group: str | None, body: dict[str, Any]) -> None:
    """Raise AccessForbidden unless ``permissions`` allow ``operation`` on every group it names.

    ``group`` is the group of a single-group operation (from the path or the body), None for
    ListFeatureGroups and the batches (whose groups are in ``body``).
    """
    if permissions.full:
        return
    action = OPERATION_ACTIONS[operation]
    if operation in _BATCH_LISTS:
        names = batch_groups(operation, body)
    elif group is not None:
        names = [group]
    else:
        return  # ListFeatureGroups: filtered by readable(), never refused
    denied = [n for n in names if not permissions.allows(action, n)]
    if denied:
        raise ApiError.forbidden(refusal(action, denied, operation))


def readable(permissions: Permissions, name: str) -> bool:
    """ListFeatureGroups shows a group only to keys that may read it."""
    return permissions.allows(Action.READ, name)


__all__ = ["authorize", "batch_groups", "readable"]
