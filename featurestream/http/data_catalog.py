"""The data-catalog names of a group's offline table, as SageMaker names them. Pure.

SageMaker registers every offline store in the AWS Glue catalog as
``AwsDataCatalog.sagemaker_featurestore.<group>_<creation epoch>`` (lower case, ``-`` as ``_``),
unless the group was created with ``OfflineStoreConfig.DisableGlueTableCreation``, and reports
those names in DescribeFeatureGroup's ``OfflineStoreConfig.DataCatalogConfig``. The SageMaker
SDKs' ``athena_query()`` reads them from there. featurestream reports the same names, and its
Athena-compatible API (``athena.py``) resolves ``<database>.<table>`` back to the group through
:func:`table_of`, so a name is defined in this one place.

A group created with its own ``DataCatalogConfig`` keeps those names (SageMaker uses the table a
user registered); with ``DisableGlueTableCreation`` and no ``DataCatalogConfig`` it has none, and
no query can name it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from schemas.group import FeatureGroup

CATALOG = "AwsDataCatalog"
DATABASE = "sagemaker_featurestore"
_EXTRA_KEY = "sagemaker"  # control.EXTRA_KEY: where CreateFeatureGroup's other fields are kept


def _offline_request(group: FeatureGroup) -> dict[str, Any]:
    kept = group.extra.get(_EXTRA_KEY) or {}
    offline = kept.get("OfflineStoreConfig") if isinstance(kept, dict) else None
    return offline if isinstance(offline, dict) else {}


def glue_disabled(group: FeatureGroup) -> bool:
    """Whether the group was created with ``OfflineStoreConfig.DisableGlueTableCreation: true``."""
    return _offline_request(group).get("DisableGlueTableCreation") is True


def generated_table_name(group: FeatureGroup) -> str:
    """SageMaker's table name: ``<group>_<creation epoch>``, lower case, ``-`` written ``_``."""
    return f"{group.name.replace('-', '_').lower()}_{group.creation_epoch}"


def data_catalog_config(group: FeatureGroup) -> dict[str, str] | None:
    """``{"TableName", "Catalog", "Database"}`` of an offline-enabled group, or None if it has none."""
    if not group.offline_enabled:
        return None
    given = _offline_request(group).get("DataCatalogConfig")
    if isinstance(given, dict) and all(isinstance(given.get(k), str) and given[k]
                                       for k in ("TableName", "Catalog", "Database")):
        return {"TableName": given["TableName"], "Catalog": given["Catalog"], "Database": given["Database"]}
    if glue_disabled(group):
        return None
    return {"TableName": generated_table_name(group), "Catalog": CATALOG, "Database": DATABASE}


def table_of(groups: Iterable[FeatureGroup], database: str, table: str) -> FeatureGroup | None:
    """The group whose catalog table is ``database.table`` (compared case-insensitively, as Athena
    does), or None."""
    db, name = database.lower(), table.lower()
    for group in groups:
        config = data_catalog_config(group)
        if config is not None and config["Database"].lower() == db and config["TableName"].lower() == name:
            return group
    return None


def describe_fields(group: FeatureGroup) -> dict[str, Any]:
    """What DescribeFeatureGroup adds to ``OfflineStoreConfig``: DataCatalogConfig and
    DisableGlueTableCreation (always given, as SageMaker does)."""
    out: dict[str, Any] = {"DisableGlueTableCreation": glue_disabled(group)}
    config = data_catalog_config(group)
    if config is not None:
        out["DataCatalogConfig"] = config
    return out


__all__ = ["CATALOG", "DATABASE", "data_catalog_config", "describe_fields", "generated_table_name",
           "glue_disabled", "table_of"]
