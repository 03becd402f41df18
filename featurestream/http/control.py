"""The feature-group operations of SageMaker's control plane (JSON 1.1, ``X-Amz-Target:
SageMaker.<Operation>``), mapped onto featurestream's registry.

Fields the reference requires or offers that featurestream has no use for (RoleArn, the S3
location and KMS keys, throughput, tags...) are accepted and kept under
``FeatureGroup.extra["sagemaker"]``, and shown again by DescribeFeatureGroup. What is kept is
bounded: it is stored with the group's definition in the registry topic, read by every process,
so a request could otherwise grow every process's memory and reach Kafka's message size limit.
Tags follow the reference's own limits; the other kept fields together, as JSON, at most
``MAX_KEPT_BYTES``.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import orjson

from featurestream.http import data_catalog
from featurestream.http.errors import ApiError
from featurestream.http.records import group_arn, group_name, parse_ttl
from schemas.errors import DefinitionError
from schemas.group import FeatureGroup
from schemas.types import FeatureDefinition

EXTRA_KEY = "sagemaker"
OPERATIONS = ("CreateFeatureGroup", "DescribeFeatureGroup", "ListFeatureGroups", "UpdateFeatureGroup",
              "DeleteFeatureGroup")
_CREATE_MAPPED = {"FeatureGroupName", "RecordIdentifierFeatureName", "EventTimeFeatureName",
                  "FeatureDefinitions", "Description"}
_ONLINE_MAPPED = {"EnableOnlineStore", "TtlDuration"}
_LIST_SORT = {"Name", "FeatureGroupStatus", "OfflineStoreStatus", "CreationTime"}
DEFAULT_MAX_RESULTS = 10  # the reference's default page size
MAX_TAGS = 50  # the reference's limits on Tags
MAX_TAG_KEY_CHARS = 128
MAX_TAG_VALUE_CHARS = 256
# Fields kept but unused, Tags aside, as JSON. The reference's own (RoleArn, OfflineStoreConfig with its
# S3 and KMS settings and DataCatalogConfig, ThroughputConfig...) take under 8 KB at their maxima.
MAX_KEPT_BYTES = 16 * 1024
MAX_RESULTS = 100


def _obj(body: Any, key: str, *, required: bool = False) -> Any:
    if key not in body or body[key] is None:
        if required:
            raise ApiError.validation(f"1 validation error detected: Value null at '{key}' failed to satisfy "
                                      "constraint: Member must not be null")
        return None
    return body[key]


def _dict(body: dict[str, Any], key: str) -> dict[str, Any] | None:
    value = _obj(body, key)
    if value is not None and not isinstance(value, dict):
        raise ApiError.validation(f"{key} must be an object; got {type(value).__name__}")
    return value


def _definitions(value: Any, key: str) -> list[FeatureDefinition]:
    if not isinstance(value, list) or not value:
        raise ApiError.validation(f"{key} must be a non-empty list of "
                                  f'{{"FeatureName": ..., "FeatureType": ...}}; got {str(value)[:80]}')
    return [FeatureDefinition.from_api(d) for d in value]


def group_from_create(body: dict[str, Any]) -> FeatureGroup:
    """A CreateFeatureGroup request -> the FeatureGroup to register (DefinitionError/ApiError if invalid)."""
    name = group_name(_obj(body, "FeatureGroupName", required=True))
    rid = _obj(body, "RecordIdentifierFeatureName", required=True)
    et = _obj(body, "EventTimeFeatureName", required=True)
    features = _definitions(_obj(body, "FeatureDefinitions", required=True), "FeatureDefinitions")
    online = _dict(body, "OnlineStoreConfig")
    offline = _dict(body, "OfflineStoreConfig")
    table_format = None if offline is None else offline.get("TableFormat")
    if table_format == "Glue":
        raise ApiError.validation(
            "OfflineStoreConfig.TableFormat 'Glue' (Parquet files catalogued in AWS Glue) is not supported: "
            "featurestream's offline store is always an Apache Iceberg table, which Glue, Athena, Spark and Trino "
            "read; send TableFormat 'Iceberg' or leave it out")
    if table_format not in (None, "Iceberg"):
        raise ApiError.validation(f"OfflineStoreConfig.TableFormat must be 'Iceberg' (or left out); got "
                                  f"{table_format!r}")
    enable_online = False if online is None else online.get("EnableOnlineStore", False)
    if not isinstance(enable_online, bool):
        raise ApiError.validation(f"OnlineStoreConfig.EnableOnlineStore must be true or false; got "
                                  f"{enable_online!r}")
    ttl = parse_ttl(online["TtlDuration"], "OnlineStoreConfig.TtlDuration") \
        if online is not None and online.get("TtlDuration") is not None else None
    description = _obj(body, "Description") or ""
    kept: dict[str, Any] = {k: v for k, v in body.items() if k not in _CREATE_MAPPED and k != "OnlineStoreConfig"}
    online_rest = {k: v for k, v in (online or {}).items() if k not in _ONLINE_MAPPED}
    if online_rest:
        kept["OnlineStoreConfig"] = online_rest
    _check_kept(kept)
    return FeatureGroup(name=name, record_identifier_name=rid, event_time_name=et, features=tuple(features),
                        online_enabled=enable_online, offline_enabled=offline is not None, ttl=ttl,
                        description=description, extra={EXTRA_KEY: kept} if kept else {})


def _check_tags(tags: Any) -> None:
    if not isinstance(tags, list):
        raise ApiError.validation(f"Tags must be a list of {{\"Key\": ..., \"Value\": ...}}; got "
                                  f"{type(tags).__name__}")
    if len(tags) > MAX_TAGS:
        raise ApiError.validation(f"Tags has {len(tags)} tags; at most {MAX_TAGS} are allowed")
    for n, tag in enumerate(tags):
        if not isinstance(tag, dict) or set(tag) - {"Key", "Value"} or not isinstance(tag.get("Key"), str) \
                or not isinstance(tag.get("Value", ""), str):
            raise ApiError.validation(f"Tags[{n}] must be {{\"Key\": string, \"Value\": string}}; got "
                                      f"{str(tag)[:80]}")
        if not 1 <= len(tag["Key"]) <= MAX_TAG_KEY_CHARS:
            raise ApiError.validation(f"Tags[{n}].Key is {len(tag['Key'])} characters; a tag key has 1 to "
                                      f"{MAX_TAG_KEY_CHARS}")
        if len(tag.get("Value", "")) > MAX_TAG_VALUE_CHARS:
            raise ApiError.validation(f"Tags[{n}].Value is {len(tag['Value'])} characters; a tag value has at "
                                      f"most {MAX_TAG_VALUE_CHARS}")


def _check_kept(kept: dict[str, Any]) -> None:
    """ApiError 400 when the fields kept but unused pass their bounds (see the module's docstring)."""
    if kept.get("Tags") is not None:
        _check_tags(kept["Tags"])
    rest = {k: v for k, v in kept.items() if k != "Tags"}
    try:
        size = len(orjson.dumps(rest))
    except orjson.JSONEncodeError:  # nested deeper than orjson writes (254 levels)
        raise ApiError.validation("the fields featurestream keeps without using are nested too deeply; "
                                  f"they must fit in {MAX_KEPT_BYTES} bytes of JSON") from None
    if size > MAX_KEPT_BYTES:
        largest = sorted(rest, key=lambda k: len(orjson.dumps(rest[k])), reverse=True)[:3]
        names = ", ".join(k[:64] for k in largest)
        raise ApiError.validation(f"the fields featurestream keeps without using ({names}...) take {size} bytes "
                                  f"as JSON; at most {MAX_KEPT_BYTES} are allowed "
                                  "(Tags aside, which have their own limits)")


def describe(group: FeatureGroup, region: str) -> dict[str, Any]:
    """DescribeFeatureGroup's answer for ``group``."""
    kept = dict(group.extra.get(EXTRA_KEY) or {})
    out: dict[str, Any] = {
        "FeatureGroupArn": group_arn(group.name, region),
        "FeatureGroupName": group.name,
        "RecordIdentifierFeatureName": group.record_identifier_name,
        "EventTimeFeatureName": group.event_time_name,
        "FeatureDefinitions": [f.to_api() for f in group.features],
        "CreationTime": group.creation_time,
        "FeatureGroupStatus": "Created",
        "OfflineStoreStatus": {"Status": "Active" if group.offline_enabled else "Disabled"},
        "Description": group.description,
        "NextToken": "",
    }
    if group.online_enabled:
        online: dict[str, Any] = {**(kept.get("OnlineStoreConfig") or {}), "EnableOnlineStore": True}
        if group.ttl is not None:
            online["TtlDuration"] = group.ttl.to_api()
        out["OnlineStoreConfig"] = online
    if group.offline_enabled:
        offline = dict(kept.get("OfflineStoreConfig") or {})
        s3 = dict(offline.get("S3StorageConfig") or {})
        s3.setdefault("S3Uri", group.offline_uri)
        # Where featurestream really writes: the server's offline location, not the S3Uri asked for.
        s3["ResolvedOutputS3Uri"] = group.offline_uri
        offline["S3StorageConfig"] = s3
        offline["TableFormat"] = "Iceberg"  # whatever was asked (Iceberg or nothing): what it is
        offline.update(data_catalog.describe_fields(group))
        out["OfflineStoreConfig"] = offline
    for key in ("RoleArn", "ThroughputConfig"):
        if key in kept:
            out[key] = kept[key]
    return out


def summary(group: FeatureGroup, region: str) -> dict[str, Any]:
    return {"FeatureGroupName": group.name, "FeatureGroupArn": group_arn(group.name, region),
            "CreationTime": group.creation_time, "FeatureGroupStatus": "Created",
            "OfflineStoreStatus": {"Status": "Active" if group.offline_enabled else "Disabled"}}


def _token(offset: int) -> str:
    return base64.urlsafe_b64encode(orjson.dumps({"o": offset})).decode()


def _offset(token: Any) -> int:
    if token in (None, ""):
        return 0
    try:
        offset = orjson.loads(base64.urlsafe_b64decode(str(token).encode()))["o"]
    except (binascii.Error, ValueError, TypeError, KeyError, orjson.JSONDecodeError):
        raise ApiError.validation(f"NextToken {str(token)[:60]!r} is not a token this server returned") from None
    if type(offset) is not int or offset < 0:
        raise ApiError.validation(f"NextToken {str(token)[:60]!r} is not a token this server returned")
    return offset


def _epoch(body: dict[str, Any], key: str) -> float | None:
    value = _obj(body, key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ApiError.validation(f"{key} must be a timestamp (epoch seconds); got {value!r}")
    return float(value)


def list_page(groups: list[FeatureGroup], body: dict[str, Any], region: str) -> dict[str, Any]:
    """ListFeatureGroups: filter, sort, page (NextToken/MaxResults) over all groups."""
    max_results = _obj(body, "MaxResults")
    if max_results is None:
        max_results = DEFAULT_MAX_RESULTS
    if type(max_results) is not int or not 1 <= max_results <= MAX_RESULTS:
        raise ApiError.validation(f"MaxResults must be an integer from 1 to {MAX_RESULTS}; got {max_results!r}")
    contains = _obj(body, "NameContains")
    if contains is not None and not isinstance(contains, str):
        raise ApiError.validation(f"NameContains must be a string; got {contains!r}")
    after, before = _epoch(body, "CreationTimeAfter"), _epoch(body, "CreationTimeBefore")
    status = _obj(body, "FeatureGroupStatusEquals")
    offline_status = _obj(body, "OfflineStoreStatusEquals")
    sort_by = _obj(body, "SortBy") or "CreationTime"
    order = _obj(body, "SortOrder") or "Descending"
    if sort_by not in _LIST_SORT:
        raise ApiError.validation(f"SortBy {sort_by!r} is not one of {', '.join(sorted(_LIST_SORT))}")
    if order not in ("Ascending", "Descending"):
        raise ApiError.validation(f"SortOrder {order!r} is not Ascending or Descending")
    offset = _offset(_obj(body, "NextToken"))
    items = [summary(g, region) for g in groups
             if (contains is None or contains.lower() in g.name.lower())
             and (after is None or g.creation_time > after) and (before is None or g.creation_time < before)]
    if status is not None:
        items = [i for i in items if i["FeatureGroupStatus"] == status]
    if offline_status is not None:
        items = [i for i in items if i["OfflineStoreStatus"]["Status"] == offline_status]

    def key(item: dict[str, Any]) -> tuple[Any, str]:
        field = {"Name": "FeatureGroupName"}.get(sort_by, sort_by)
        value = item[field]["Status"] if sort_by == "OfflineStoreStatus" else item[field]
        return value, item["FeatureGroupName"]  # the name breaks ties so pages are stable

    items.sort(key=key, reverse=order == "Descending")
    page = items[offset:offset + max_results]
    out: dict[str, Any] = {"FeatureGroupSummaries": page}
    if offset + max_results < len(items):
        out["NextToken"] = _token(offset + max_results)
    return out


def update_args(body: dict[str, Any]) -> dict[str, Any]:
    """UpdateFeatureGroup -> keyword arguments of Registry.update."""
    args: dict[str, Any] = {}
    adds = _obj(body, "FeatureAdditions")
    if adds is not None:
        if isinstance(adds, list) and len(adds) > MAX_RESULTS:
            raise ApiError.validation(f"FeatureAdditions has {len(adds)} items; at most {MAX_RESULTS}")
        args["add_features"] = _definitions(adds, "FeatureAdditions")
    online = _dict(body, "OnlineStoreConfig")
    if online is not None and online.get("TtlDuration") is not None:
        args["ttl"] = parse_ttl(online["TtlDuration"], "OnlineStoreConfig.TtlDuration")
    return args


__all__ = ["OPERATIONS", "DefinitionError", "describe", "group_from_create", "list_page", "summary",
           "update_args"]
