"""The seed notebook's flow through the SageMaker Python SDK v3 (`sagemaker.mlops.feature_store`), unchanged.

Run by tests/integration/test_sdk_notebooks.py with the python of the sdk-v3 venv (`make sdk-venvs`);
same contract as notebook_v2.py: a JSON spec file in, one JSON line out.
"""

import json
import sys
import time

import pandas as pd
from botocore.exceptions import ClientError
from sagemaker.core.helper.session_helper import Session
from sagemaker.core.shapes import (
    BatchGetRecordIdentifier,
    FeatureDefinition,
    OfflineStoreConfig,
    OnlineStoreConfig,
    S3StorageConfig,
)
from sagemaker.mlops.feature_store import FeatureGroup
from sagemaker.mlops.feature_store.feature_utils import (
    create_athena_query,
    ingest_dataframe,
    list_records,
    load_feature_definitions_from_dataframe,
    update_record,
)


def record_dict(response) -> dict:
    return {f.feature_name: f.value_as_string for f in (response.record or [])}


def main(spec: dict) -> dict:
    import importlib.metadata as md

    out: dict = {"version": md.version("sagemaker")}
    session = Session()
    frame = pd.DataFrame(spec["rows"])
    frame["City"] = frame["City"].astype("string")
    definitions = load_feature_definitions_from_dataframe(frame)
    group = FeatureGroup.create(
        feature_group_name=spec["group"], record_identifier_feature_name="customer_id",
        event_time_feature_name="EventTime", feature_definitions=definitions,
        online_store_config=OnlineStoreConfig(enable_online_store=True),
        offline_store_config=OfflineStoreConfig(s3_storage_config=S3StorageConfig(s3_uri=spec["s3_uri"])),
        role_arn=spec["role"])
    group.wait_for_status(target_status="Created", poll=1, timeout=60)
    ingest_dataframe(feature_group_name=spec["group"], data_frame=frame, max_workers=2, wait=True)
    group.delete_record(record_identifier_value_as_string=str(spec["deleted"]), event_time=repr(spec["deleted_at"]),
                        deletion_mode="SoftDelete")
    group.refresh()
    catalog = group.offline_store_config.data_catalog_config
    out["describe"] = {"status": group.feature_group_status,
                       "catalog": {"TableName": catalog.table_name, "Catalog": catalog.catalog,
                                   "Database": catalog.database}}
    out["listed"] = spec["group"] in [g.feature_group_name for g in FeatureGroup.get_all(name_contains=spec["group"])]
    deadline = time.time() + 60
    while not record_dict(group.get_record(record_identifier_value_as_string="1")) and time.time() < deadline:
        time.sleep(0.2)
    out["get"] = [{"FeatureName": k, "ValueAsString": v}
                  for k, v in record_dict(group.get_record(record_identifier_value_as_string="1")).items()]
    batch = group.batch_get_record(identifiers=[BatchGetRecordIdentifier(
        feature_group_name=spec["group"], record_identifiers_value_as_string=["0", "2"])])
    out["batch_get"] = [{"Record": [{"FeatureName": f.feature_name, "ValueAsString": f.value_as_string}
                                    for f in r.record]} for r in batch.records]

    query = create_athena_query(spec["group"], session)
    out["table_name"] = query.table_name
    table = f'"{query.database}"."{query.table_name}"'
    deadline = time.time() + 120
    while True:
        query.run(query_string=f"SELECT count(*) AS n FROM {table}", output_location=spec["output"])
        query.wait()
        if int(query.as_dataframe()["n"][0]) == spec["offline_rows"] or time.time() > deadline:
            break
        time.sleep(1)
    out["queries"], out["seconds"] = {}, {}
    for key, sql in spec["queries"].items():
        started = time.perf_counter()
        query.run(query_string=sql.replace("<table>", table), output_location=spec["output"])
        query.wait()
        frame_out = query.as_dataframe()
        out["seconds"][key] = time.perf_counter() - started
        out["queries"][key] = frame_out.astype(object).where(frame_out.notna(), None).to_dict(orient="records")

    group.update(feature_additions=[FeatureDefinition(feature_name="tier", feature_type="String")])
    group.refresh()
    out["last_update"] = {"Status": group.last_update_status.status}
    out["list_records"] = list(list_records(spec["group"]).record_identifiers)
    update_record(spec["group"], "1", [{"FeatureName": "tier", "ValueAsString": "gold"}])
    deadline = time.time() + 60
    while time.time() < deadline:
        record = record_dict(group.get_record(record_identifier_value_as_string="1"))
        if record.get("tier") == "gold":
            break
        time.sleep(0.2)
    out["updated"] = record
    group.delete()
    deadline, out["after_delete"] = time.time() + 60, "still there"
    while time.time() < deadline:
        try:
            FeatureGroup.get(feature_group_name=spec["group"])
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ResourceNotFound":
                out["after_delete"] = "gone"
                break
            raise
        except Exception as exc:  # noqa: BLE001 - sagemaker-core wraps some errors in its own types
            if "ResourceNotFound" in repr(exc) or "not exist" in str(exc):
                out["after_delete"] = "gone"
                break
            raise
        time.sleep(0.5)
    return out


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        result = main(json.load(f))
    print(json.dumps(result, default=str))
