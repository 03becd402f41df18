"""ListRecords and UpdateRecord: the runtime operations SageMaker added later (SDK v3's
``list_records`` and ``update_record``), in botocore's ``sagemaker-featurestore-runtime`` model.

- ListRecords (``POST /FeatureGroup/<name>/ListRecords``): the identifiers with a record online,
  sorted, at most ``MaxResults`` (1-100, default 100) a page; ``NextToken`` carries the last
  identifier answered, so pages neither repeat nor skip identifiers that exist throughout.
  Expired records are never listed; soft-deleted ones only with ``IncludeSoftDeletedRecords``.
- UpdateRecord (``POST /FeatureGroup/<name>/Record``): writes only the listed features and keeps
  the others. It reads the record online, puts the listed features over it and publishes the
  result as a PutRecord, so the same write-if-newer rule decides: without the event-time feature
  in ``Features`` the record keeps its event time, and an equal event time is won by the later
  write, so the update applies; with an event time older than the stored one it is history (the
  offline store gets it, the online record stays). A record that does not exist online (or is
  deleted or expired) answers ResourceNotFound, as SageMaker does. Two updates of one
  record at the same moment can each miss the other's features (read, then write; no
  ``ConflictException`` is raised).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from collections.abc import Callable
from typing import Any, TypeVar

import orjson

from featurestream.http.errors import ApiError
from featurestream.http.records import record_id, record_to_wire
from featurestream.http.runtime import RuntimeApi
from schemas.group import FeatureGroup

T = TypeVar("T")

MAX_LIST = 100


def _token(last: str) -> str:
    return base64.urlsafe_b64encode(orjson.dumps({"after": last})).decode()


def _after(token: Any) -> str | None:
    if token is None:
        return None
    try:
        after = orjson.loads(base64.urlsafe_b64decode(str(token).encode()))["after"]
    except (binascii.Error, ValueError, TypeError, KeyError, orjson.JSONDecodeError):
        after = None
    if not isinstance(after, str):
        raise ApiError.validation(f"NextToken {str(token)[:60]!r} is not a token this server returned")
    return after


class RecordsV2:
    """ListRecords and UpdateRecord on top of the runtime API's reads and puts."""

    def __init__(self, runtime: RuntimeApi) -> None:
        self.runtime = runtime
        self.store = runtime.store

    def _group(self, name: str) -> FeatureGroup:
        group = self.runtime.groups.get(name)
        if group is None:
            raise ApiError.not_found(f"Resource Not Found: feature group {name!r} does not exist")
        return group

    async def _run(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.runtime.executor, fn)

    async def list_records(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        limit = body.get("MaxResults", MAX_LIST)
        if type(limit) is not int or not 1 <= limit <= MAX_LIST:
            raise ApiError.validation(f"MaxResults must be an integer from 1 to {MAX_LIST}; got {limit!r}")
        include = body.get("IncludeSoftDeletedRecords", False)
        if not isinstance(include, bool):
            raise ApiError.validation(f"IncludeSoftDeletedRecords must be true or false; got {include!r}")
        after = _after(body.get("NextToken"))

        def run() -> dict[str, Any]:
            group = self._group(name)
            ids = self.store.online.record_ids(group, include_deleted=include)
            if after is not None:
                ids = [i for i in ids if i > after]
            out: dict[str, Any] = {"RecordIdentifiers": ids[:limit]}
            if len(ids) > limit:
                out["NextToken"] = _token(ids[limit - 1])
            return out

        return await self._run(run)

    async def update_record(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        rid_text = body.get("RecordIdentifierValueAsString")
        features = body.get("Features")
        if not isinstance(features, list) or not features:
            raise ApiError.validation("Features must be a non-empty list of "
                                      '{"FeatureName": ..., "ValueAsString": ...}')

        def merged() -> dict[str, Any]:
            group = self._group(name)
            rid = record_id(group, rid_text)
            current = self.store.online.get_record(group, rid)
            listed = {f.get("FeatureName") for f in features if isinstance(f, dict)}
            if group.record_identifier_name in listed:
                raise ApiError.validation(f"feature group {group.name!r}: UpdateRecord names the record in "
                                          "RecordIdentifierValueAsString; leave the identifier feature "
                                          f"{group.record_identifier_name!r} out of Features")
            base = [] if current is None else [f for f in record_to_wire(current)
                                               if f["FeatureName"] not in listed]
            if current is None:  # as SageMaker: the record must exist online (PutRecord creates it)
                raise ApiError.not_found(f"Resource Not Found: feature group {group.name!r} has no record {rid!r} "
                                         "online; UpdateRecord changes an existing record, PutRecord creates one")
            ident = {"FeatureName": group.record_identifier_name, "ValueAsString": rid_text}
            record = [ident, *[f for f in base if f["FeatureName"] != group.record_identifier_name], *features]
            put = {"Record": record}
            for key in ("TargetStores", "TtlDuration"):
                if key in body:
                    put[key] = body[key]
            return put

        put = await self._run(merged)
        return await self.runtime.put_record(name, put)


__all__ = ["MAX_LIST", "RecordsV2"]
