"""The seed notebook's flow through the SageMaker Python SDK v2 (`sagemaker.feature_store`), unchanged.

Run by tests/integration/test_sdk_notebooks.py with the python of the sdk-v2 venv (`make sdk-venvs`),
with AWS_ENDPOINT_URL_SAGEMAKER, ..._SAGEMAKER_FEATURESTORE_RUNTIME, ..._ATHENA and ..._S3 pointing at
the test stack. Argument: a JSON file (group name, rows, queries, output location). Prints one JSON
line with what each step returned, for the test to compare with its oracle.
"""

import json
import sys
import time

import boto3
import pandas as pd
import sagemaker
from botocore.exceptions import ClientError
from sagemaker.feature_store.feature_definition import FeatureDefinition, FeatureTypeEnum
from sagemaker.feature_store.feature_group import FeatureGroup
from sagemaker.feature_store.feature_store import FeatureStore
from sagemaker.feature_store.inputs import DeletionModeEnum, Identifier


def wait_gone(group: FeatureGroup) -> str:
    """Describe until the group is gone (DeleteFeatureGroup answers at once and finishes later)."""
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            group.describe()
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ResourceNotFound":
                return "gone"
            raise
        time.sleep(0.5)
    return "still there"


def main(spec: dict) -> dict:
    out: dict = {"version": sagemaker.__version__}
    session = sagemaker.Session(boto_session=boto3.Session())
    frame = pd.DataFrame(spec["rows"])
    frame["City"] = frame["City"].astype("string")
    group = FeatureGroup(name=spec["group"], sagemaker_session=session)
    group.load_feature_definitions(data_frame=frame)
    group.create(s3_uri=spec["s3_uri"], record_identifier_name="customer_id", event_time_feature_name="EventTime",
                 role_arn=spec["role"], enable_online_store=True)
    while group.describe().get("FeatureGroupStatus") == "Creating":
        time.sleep(1)
    group.ingest(data_frame=frame, max_workers=2, wait=True)
    group.delete_record(record_identifier_value_as_string=str(spec["deleted"]), event_time=repr(spec["deleted_at"]),
                        deletion_mode=DeletionModeEnum.SOFT_DELETE)
    desc = group.describe()
    out["describe"] = {"status": desc["FeatureGroupStatus"],
                       "catalog": desc["OfflineStoreConfig"]["DataCatalogConfig"]}
    out["listed"] = spec["group"] in [g["FeatureGroupName"] for g in
                                      FeatureStore(session).list_feature_groups(name_contains=spec["group"])
                                      ["FeatureGroupSummaries"]]
    deadline = time.time() + 60
    while not group.get_record(record_identifier_value_as_string="1") and time.time() < deadline:
        time.sleep(0.2)  # the online processor applies puts asynchronously, as SageMaker's store does
    out["get"] = group.get_record(record_identifier_value_as_string="1")
    out["batch_get"] = FeatureStore(session).batch_get_record(identifiers=[Identifier(
        feature_group_name=spec["group"], record_identifiers_value_as_string=["0", "2"])])["Records"]

    query = group.athena_query()
    out["table_name"] = query.table_name
    table = f'"{query.database}"."{query.table_name}"'
    # the offline store fills within a minute: wait as notebooks wait for it
    deadline = time.time() + 120
    while True:
        query.run(query_string=f"SELECT count(*) AS n FROM {table}", output_location=spec["output"])
        query.wait()
        if int(query.as_dataframe()["n"][0]) == spec["offline_rows"] or time.time() > deadline:
            break
        time.sleep(1)
    out["queries"] = {}
    out["seconds"] = {}
    for key, sql in spec["queries"].items():
        started = time.perf_counter()
        query.run(query_string=sql.replace("<table>", table), output_location=spec["output"])
        query.wait()
        frame_out = query.as_dataframe()
        out["seconds"][key] = time.perf_counter() - started
        out["queries"][key] = frame_out.astype(object).where(frame_out.notna(), None).to_dict(orient="records")

    group.update(feature_additions=[FeatureDefinition("tier", FeatureTypeEnum.STRING)])
    out["last_update"] = group.describe().get("LastUpdateStatus")
    runtime = session.sagemaker_featurestore_runtime_client
    out["list_records"] = runtime.list_records(FeatureGroupName=spec["group"])["RecordIdentifiers"]
    runtime.update_record(FeatureGroupName=spec["group"], RecordIdentifierValueAsString="1",
                          Features=[{"FeatureName": "tier", "ValueAsString": "gold"}])
    deadline = time.time() + 60
    while time.time() < deadline:
        record = {f["FeatureName"]: f["ValueAsString"] for f in group.get_record(record_identifier_value_as_string="1")}
        if record.get("tier") == "gold":
            break
        time.sleep(0.2)
    out["updated"] = record
    group.delete()
    out["after_delete"] = wait_gone(group)
    return out


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        result = main(json.load(f))
    print(json.dumps(result, default=str))
