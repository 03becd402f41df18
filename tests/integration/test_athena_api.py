"""The Athena-compatible API and the SDK v3 surface of `featurestream serve`, through boto3's own clients.

The server, the online processor and the offline sink run as subprocesses against the real
stack; nothing is mocked. Results are checked against oracles computed here from what was put.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from urllib.parse import urlencode

import boto3
import pytest

from tests.integration.procs import Proc
from tests.support.http_api import (
    athena_client,
    athena_rest,
    boto_clients,
    error_of,
    raw_request,
    server_env,
    start_server,
    stop_server,
)
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration
LIMITED_KEY, LIMITED_SECRET = "AKIDLIMITEDREADER", "limited-reader-secret"


@pytest.fixture(scope="module")
def api(stack, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("athena")
    creds = tmp / "credentials"
    creds.write_text(f"[limited]\naws_access_key_id = {LIMITED_KEY}\naws_secret_access_key = {LIMITED_SECRET}\n"
                     "featurestream_read = nothing-*\n")
    env = server_env(stack)
    processor = subprocess.Popen([sys.executable, "-m", "featurestream.cli", "process", "--metrics-port", "0"],
                                 env=env, stdout=subprocess.DEVNULL, stderr=open(tmp / "process.log", "wb"))  # noqa: SIM115
    sink = Proc(stack, ["sink", "--metrics-port", "0", "--max-age-s", "1"], tmp / "sink.log", extra_env=env)
    server, url = start_server(env, tmp, "--workers", "2", "--credentials", str(creds))
    bucket = stack.offline_uri.removeprefix("s3://").split("/")[0]
    yield {"url": url, "key": env["AWS_ACCESS_KEY_ID"], "secret": env["AWS_SECRET_ACCESS_KEY"], "env": env,
           "tmp": tmp, "output": f"s3://{bucket}/athena-results/", "s3": stack.s3_endpoint_url}
    stop_server(server)
    sink.stop()
    stop_server(processor)


def _group(sm, name, *, et_type="Fractional", **offline):
    sm.create_feature_group(
        FeatureGroupName=name, RecordIdentifierFeatureName="customer_id", EventTimeFeatureName="EventTime",
        FeatureDefinitions=[{"FeatureName": "customer_id", "FeatureType": "Integral"},
                            {"FeatureName": "EventTime", "FeatureType": et_type},
                            {"FeatureName": "City", "FeatureType": "String"},
                            {"FeatureName": "score", "FeatureType": "Fractional"}],
        OnlineStoreConfig={"EnableOnlineStore": True},
        OfflineStoreConfig={"S3StorageConfig": {"S3Uri": "s3://anywhere/fs"}, **offline},
        RoleArn="arn:aws:iam::123456789012:role/unused")


def _run(athena, api, sql, database="sagemaker_featurestore"):
    qid = athena.start_query_execution(
        QueryString=sql, QueryExecutionContext={"Catalog": "AwsDataCatalog", "Database": database},
        ResultConfiguration={"OutputLocation": api["output"]}, ClientRequestToken=uuid.uuid4().hex)["QueryExecutionId"]

    def done():
        state = athena.get_query_execution(QueryExecutionId=qid)["QueryExecution"]
        return state if state["Status"]["State"] not in ("QUEUED", "RUNNING") else None

    return qid, wait_for(done, timeout_s=60, what=f"query {sql[:60]}")


def _rows(athena, qid, page=1000):
    rows, token, pages = [], None, 0
    while True:
        kw = {"NextToken": token} if token else {}
        answer = athena.get_query_results(QueryExecutionId=qid, MaxResults=page, **kw)
        pages += 1
        rows += [[d.get("VarCharValue") for d in r["Data"]] for r in answer["ResultSet"]["Rows"]]
        token = answer.get("NextToken")
        if not token:
            return rows, answer["ResultSet"]["ResultSetMetadata"]["ColumnInfo"], pages


def test_describe_names_the_table_and_athena_answers_queries_over_it(api, unique_name):
    sm, rt = boto_clients(api)
    athena = athena_client(api)
    name = unique_name("athena")
    _group(sm, name)
    hidden = unique_name("noglue")
    _group(sm, hidden, DisableGlueTableCreation=True)
    desc = sm.describe_feature_group(FeatureGroupName=name)
    catalog = desc["OfflineStoreConfig"]["DataCatalogConfig"]
    table = f"{name.replace('-', '_')}_{int(desc['CreationTime'].timestamp())}"
    assert catalog == {"TableName": table, "Catalog": "AwsDataCatalog", "Database": "sagemaker_featurestore"}
    assert desc["OfflineStoreConfig"]["DisableGlueTableCreation"] is False
    hidden_desc = sm.describe_feature_group(FeatureGroupName=hidden)["OfflineStoreConfig"]
    assert hidden_desc["DisableGlueTableCreation"] is True and "DataCatalogConfig" not in hidden_desc

    # 10,000 rows: ids 0..4999, two versions each; the second one of even ids is newer
    base = 1_700_000_000.25
    n = 5000
    entries = []
    for i in range(n):
        for version in (0, 1):
            et = base + i + (1000.5 if version and i % 2 == 0 else -1000.5 if version else 0)
            entries.append({"FeatureGroupName": name, "Record": [
                {"FeatureName": "customer_id", "ValueAsString": str(i)},
                {"FeatureName": "EventTime", "ValueAsString": repr(et)},
                {"FeatureName": "City", "ValueAsString": f'city "{i % 7}", v{version}'},
                {"FeatureName": "score", "ValueAsString": repr(i / 3)}]})
    for start in range(0, len(entries), 25):
        answer = rt.batch_write_record(Entries=entries[start:start + 25])
        assert not answer["Errors"] and not answer["UnprocessedEntries"]
    rt.delete_record(FeatureGroupName=name, RecordIdentifierValueAsString="4", EventTime=repr(base + 10_000))

    count_sql = f"SELECT count(*) AS n FROM sagemaker_featurestore.{table}"
    wait_for(lambda: _rows(athena, _run(athena, api, count_sql)[0])[0][1:] == [["10001"]], timeout_s=120,
             what="the sink to write 10,001 rows")

    # the notebook's "latest snapshot without deleted", mixed-case columns, trailing ';'
    latest = (f'SELECT customer_id, City, score, EventTime FROM (SELECT *, row_number() OVER (PARTITION BY customer_id '
              f'ORDER BY EventTime desc, Api_Invocation_Time DESC, write_time DESC) AS row_num FROM '
              f'"sagemaker_featurestore"."{table}") WHERE row_num = 1 AND NOT is_deleted ORDER BY customer_id;')
    started = time.perf_counter()
    qid, execution = _run(athena, api, latest)
    took = time.perf_counter() - started
    assert execution["Status"]["State"] == "SUCCEEDED", execution["Status"]
    assert execution["ResultConfiguration"]["OutputLocation"] == f"{api['output']}{qid}.csv"
    rows, columns, pages = _rows(athena, qid)
    assert [c["Name"] for c in columns] == ["customer_id", "city", "score", "eventtime"]
    assert [c["Type"] for c in columns] == ["bigint", "varchar", "double", "double"]
    want = [[str(i), f'city "{i % 7}", v{1 if i % 2 == 0 else 0}', repr(i / 3),
             repr(base + i + (1000.5 if i % 2 == 0 else 0))] for i in range(n) if i != 4]
    assert rows[0] == ["customer_id", "city", "score", "eventtime"] and rows[1:] == want
    assert pages == 5  # 4,999 rows + the header, 1,000 a page
    print(f"\nlatest-snapshot query over 10,001 rows: {took:.2f} s (start to SUCCEEDED)")

    # every one of the 10,001 rows, paged through GetQueryResults, 1,000 and then 700 a page
    everything = f"SELECT customer_id, EventTime, is_deleted FROM sagemaker_featurestore.{table} ORDER BY 1, 2"
    qid, _ = _run(athena, api, everything)
    rows, columns, pages = _rows(athena, qid)
    oracle = sorted([(int(e["Record"][0]["ValueAsString"]), float(e["Record"][1]["ValueAsString"]), "false")
                     for e in entries] + [(4, base + 10_000, "true")])
    assert rows[0] == ["customer_id", "eventtime", "is_deleted"]
    assert [(int(r[0]), float(r[1]), r[2]) for r in rows[1:]] == oracle
    assert pages == 11 and [c["Type"] for c in columns] == ["bigint", "double", "boolean"]
    small, _, small_pages = _rows(athena, qid, page=700)
    assert small == rows and small_pages == 15

    # the result file is where Athena puts it, as CSV
    s3 = boto3.client("s3", endpoint_url=api["s3"], region_name="us-east-1", aws_access_key_id=api["key"],
                      aws_secret_access_key=api["secret"])
    bucket, _, prefix = api["output"].removeprefix("s3://").partition("/")
    body = s3.get_object(Bucket=bucket, Key=f"{prefix}{qid}.csv")["Body"].read().decode()
    assert body.splitlines()[0] == '"customer_id","eventtime","is_deleted"' and len(body.splitlines()) == 10_002

    # a token from another query is refused
    token = athena.get_query_results(QueryExecutionId=qid, MaxResults=2)["NextToken"]
    other, _ = _run(athena, api, "SELECT 1")
    assert error_of(athena.get_query_results, QueryExecutionId=other, NextToken=token)[0] == "InvalidRequestException"

    # time travel by event time, with a bare number; timestamp literals and from_iso8601_timestamp
    travel = (f"SELECT count(*) FROM sagemaker_featurestore.{table} WHERE EventTime <= {base + 99.5} "
              f"AND write_time > timestamp '2000-01-01 00:00:00' "
              f"AND api_invocation_time > from_iso8601_timestamp('2000-01-01T00:00:00Z')")
    want_travel = sum(1 for e in entries if float(e["Record"][1]["ValueAsString"]) <= base + 99.5)
    assert _rows(athena, _run(athena, api, travel)[0])[0][1] == [str(want_travel)]

    # the same request token twice is one execution (the SDKs retry with it)
    token = uuid.uuid4().hex
    first = athena.start_query_execution(QueryString="SELECT 2", ClientRequestToken=token,
                                         ResultConfiguration={"OutputLocation": api["output"]})
    again = athena.start_query_execution(QueryString="SELECT 2", ClientRequestToken=token,
                                         ResultConfiguration={"OutputLocation": api["output"]})
    assert first["QueryExecutionId"] == again["QueryExecutionId"]
    listed = athena.list_query_executions(MaxResults=5)
    assert listed["QueryExecutionIds"][0] == first["QueryExecutionId"] and "NextToken" in listed

    # the group created without a Glue table has none to query
    hidden_table = f"{hidden.replace('-', '_')}_{int(desc['CreationTime'].timestamp())}"
    _, failed = _run(athena, api, f"SELECT * FROM sagemaker_featurestore.{hidden_table}")
    assert failed["Status"]["State"] == "FAILED" and "TABLE_NOT_FOUND" in failed["Status"]["StateChangeReason"]


def test_athenas_rest_binding_answers_as_its_json_binding_does(api):
    """botocore 1.44 and later send Athena's operations as REST-JSON (``POST /query-executions`` ...), and the
    SageMaker SDKs' athena_query() with them: the same executions, results and errors as over JSON 1.1."""
    athena = athena_client(api)  # the JSON 1.1 binding (this suite's botocore), for comparison
    status, headers, started = athena_rest(api, "POST", "/query-executions", body={
        "QueryString": "SELECT 41 + 1 AS answer", "ClientRequestToken": uuid.uuid4().hex,
        "ResultConfiguration": {"OutputLocation": api["output"]}})
    assert status == 200 and headers["Content-Type"].startswith("application/json"), (status, started)
    qid = started["QueryExecutionId"]

    def finished():
        status, _, doc = athena_rest(api, "GET", f"/query-executions/{qid}")
        assert status == 200, doc
        return doc if doc["QueryExecution"]["Status"]["State"] not in ("QUEUED", "RUNNING") else None

    doc = wait_for(finished, timeout_s=60, what="the query to finish")["QueryExecution"]
    same = athena.get_query_execution(QueryExecutionId=qid)["QueryExecution"]
    assert doc["Status"]["State"] == same["Status"]["State"] == "SUCCEEDED"
    assert (doc["QueryExecutionId"], doc["Query"], doc["ResultConfiguration"]) == \
        (same["QueryExecutionId"], same["Query"], same["ResultConfiguration"])

    # results, paged through the query string, as the JSON binding pages them
    status, _, first = athena_rest(api, "GET", f"/query-executions/{qid}/results", "MaxResults=1")
    assert status == 200 and first["ResultSet"]["Rows"] == [{"Data": [{"VarCharValue": "answer"}]}], first
    status, _, second = athena_rest(api, "GET", f"/query-executions/{qid}/results",
                                    urlencode({"MaxResults": 1, "NextToken": first["NextToken"]}))
    assert status == 200 and second["ResultSet"]["Rows"] == [{"Data": [{"VarCharValue": "42"}]}], second
    assert "NextToken" not in second
    json_binding = athena.get_query_results(QueryExecutionId=qid)["ResultSet"]
    assert json_binding["Rows"] == first["ResultSet"]["Rows"] + second["ResultSet"]["Rows"]
    assert json_binding["ResultSetMetadata"] == second["ResultSet"]["ResultSetMetadata"]

    status, _, listed = athena_rest(api, "GET", "/query-executions", "MaxResults=50&WorkGroup=primary")
    assert status == 200 and qid in listed["QueryExecutionIds"], listed
    status, _, stopped = athena_rest(api, "POST", f"/query-executions/{qid}/stop")
    assert (status, stopped) == (200, {})  # a finished query stays as it ended
    assert athena.get_query_execution(QueryExecutionId=qid)["QueryExecution"]["Status"]["State"] == "SUCCEEDED"

    # errors come back as the SDKs parse them: the code in x-amzn-ErrorType and __type, the message
    for path, query, want in (
            ("/query-executions/no-such-execution", "", "QueryExecution no-such-execution was not found"),
            (f"/query-executions/{qid}/results", "MaxResults=ten", "MaxResults must be an integer from 1 to 1000"),
            (f"/query-executions/{qid}/results", "MaxResults=1&MaxResults=2", "MaxResults is given 2 times")):
        status, headers, err = athena_rest(api, "GET", path, query)
        assert status == 400 and headers["x-amzn-ErrorType"] == err["__type"] == "InvalidRequestException", err
        assert want in err["message"], err
    status, headers, err = athena_rest(api, "POST", "/query-executions", body={"ResultConfiguration": {}})
    assert (status, err["__type"]) == (400, "InvalidRequestException") and "QueryString is required" in err["message"]
    status, _, err = athena_rest(api, "DELETE", f"/query-executions/{qid}")
    assert (status, err["__type"]) == (404, "UnknownOperationException") and "/query-executions" in err["message"]
    status, raw_headers, _ = raw_request(api, "GET", f"/query-executions/{qid}", signed=False)
    assert status == 403 and raw_headers["x-amzn-ErrorType"] == "MissingAuthenticationTokenException"


def test_athena_failures_are_answered_as_athena_answers_them(api, unique_name):
    sm, _ = boto_clients(api)
    athena = athena_client(api)
    name = unique_name("athena-err")
    _group(sm, name, et_type="String")
    table = sm.describe_feature_group(FeatureGroupName=name)["OfflineStoreConfig"]["DataCatalogConfig"]["TableName"]

    # a group that does not exist: the query FAILS with the table's name
    qid, missing = _run(athena, api, "SELECT * FROM sagemaker_featurestore.no_such_group_1700000000")
    assert missing["Status"]["State"] == "FAILED"
    assert "TABLE_NOT_FOUND" in missing["Status"]["StateChangeReason"]
    assert "awsdatacatalog.sagemaker_featurestore.no_such_group_1700000000" in missing["Status"]["StateChangeReason"]
    assert missing["Status"]["AthenaError"]["ErrorCategory"] == 2
    code, message, _ = error_of(athena.get_query_results, QueryExecutionId=qid)
    assert code == "InvalidRequestException" and "FAILED" in message

    # a failing query (unknown column) reaches FAILED with its reason
    _, bad_column = _run(athena, api, f"SELECT no_such_column FROM sagemaker_featurestore.{table}")
    assert bad_column["Status"]["State"] == "FAILED" and "no_such_column" in bad_column["Status"]["StateChangeReason"]
    assert table in bad_column["Status"]["StateChangeReason"] or "__athena" not in bad_column["Status"]["StateChangeReason"]
    # a String event time is varchar, usable through from_iso8601_timestamp
    _, ok = _run(athena, api, f"SELECT * FROM sagemaker_featurestore.{table} WHERE "
                 "from_iso8601_timestamp(eventtime) < timestamp '2030-01-01 00:00:00'")
    assert ok["Status"]["State"] == "SUCCEEDED", ok["Status"]

    # refused at the door: not a query, not translated, malformed, no output location, unknown ids
    out = {"OutputLocation": api["output"]}
    for sql, words in [(f"DROP TABLE sagemaker_featurestore.{table}", "only queries"),
                       (f"SELECT * FROM sagemaker_featurestore.{table} FOR VERSION AS OF 1", "time travel"),
                       ("SELECT * FROM TABLE(read_csv('/etc/passwd'))", "table functions"),
                       ("SELEC nonsense", "'SELEC'"), ("SELECT * FROM (", "not valid SQL"), ("SELECT 1; SELECT 2", "one statement")]:
        code, message, status = error_of(athena.start_query_execution, QueryString=sql, ResultConfiguration=out)
        assert (code, status) == ("InvalidRequestException", 400) and words in message, (sql, message)
    code, message, _ = error_of(athena.start_query_execution, QueryString="SELECT 1")
    assert code == "InvalidRequestException" and "output location" in message
    assert error_of(athena.get_query_execution, QueryExecutionId="nope")[0] == "InvalidRequestException"
    assert error_of(athena.get_query_results, QueryExecutionId="nope")[0] == "InvalidRequestException"
    assert error_of(athena.list_query_executions, NextToken="garbage")[0] == "InvalidRequestException"
    # no way to the server's files: table functions are refused (and DuckDB's file access is off besides)
    code, message, _ = error_of(athena.start_query_execution, QueryString="SELECT * FROM read_csv('/etc/passwd')",
                                ResultConfiguration=out)
    assert code == "InvalidRequestException" and "table functions" in message

    # a key that may not read the group: the query fails; the control plane says AccessDeniedException
    limited = athena_client(api, key=LIMITED_KEY, secret=LIMITED_SECRET)
    _, denied = _run(limited, api, f"SELECT * FROM sagemaker_featurestore.{table}")
    assert denied["Status"]["State"] == "FAILED" and "ACCESS_DENIED" in denied["Status"]["StateChangeReason"]
    limited_sm, limited_rt = boto_clients(api, key=LIMITED_KEY, secret=LIMITED_SECRET)
    code, _, status = error_of(limited_sm.describe_feature_group, FeatureGroupName=name)
    assert (code, status) == ("AccessDeniedException", 403)
    assert error_of(limited_rt.get_record, FeatureGroupName=name, RecordIdentifierValueAsString="1")[0] == \
        "AccessForbidden"  # the runtime API's own name for it

    # stopping a finished query leaves it as it was
    athena.stop_query_execution(QueryExecutionId=qid)
    assert athena.get_query_execution(QueryExecutionId=qid)["QueryExecution"]["Status"]["State"] == "FAILED"


def test_update_status_list_and_update_records_and_delete_at_once(api, unique_name):
    sm, rt = boto_clients(api)
    name = unique_name("v3")
    _group(sm, name)
    assert "LastUpdateStatus" not in sm.describe_feature_group(FeatureGroupName=name)
    sm.update_feature_group(FeatureGroupName=name, FeatureAdditions=[{"FeatureName": "tier", "FeatureType": "String"}])
    assert sm.describe_feature_group(FeatureGroupName=name)["LastUpdateStatus"] == {"Status": "Successful"}

    for i in range(7):
        rt.put_record(FeatureGroupName=name, Record=[
            {"FeatureName": "customer_id", "ValueAsString": str(i)}, {"FeatureName": "EventTime", "ValueAsString": "100.5"},
            {"FeatureName": "City", "ValueAsString": f"c{i}"}, {"FeatureName": "tier", "ValueAsString": "gold"}])
    wait_for(lambda: "Record" in rt.get_record(FeatureGroupName=name, RecordIdentifierValueAsString="6"),
             timeout_s=30, what="the records online")
    rt.delete_record(FeatureGroupName=name, RecordIdentifierValueAsString="3", EventTime="200")
    wait_for(lambda: "Record" not in rt.get_record(FeatureGroupName=name, RecordIdentifierValueAsString="3"),
             timeout_s=30, what="the delete online")

    pages, token = [], None
    while True:
        answer = rt.list_records(FeatureGroupName=name, MaxResults=2, **({"NextToken": token} if token else {}))
        pages.append(answer["RecordIdentifiers"])
        token = answer.get("NextToken")
        if not token:
            break
    assert pages == [["0", "1"], ["2", "4"], ["5", "6"]]
    assert rt.list_records(FeatureGroupName=name, IncludeSoftDeletedRecords=True)["RecordIdentifiers"] == \
        [str(i) for i in range(7)]
    assert error_of(rt.list_records, FeatureGroupName=name, NextToken="bad")[0] == "ValidationError"
    assert error_of(rt.list_records, FeatureGroupName="no-such-group")[0] == "ResourceNotFound"

    # UpdateRecord writes the listed features and keeps the rest (same event time: the later write wins)
    rt.update_record(FeatureGroupName=name, RecordIdentifierValueAsString="5",
                     Features=[{"FeatureName": "tier", "ValueAsString": "platinum"}])

    def updated():
        got = rt.get_record(FeatureGroupName=name, RecordIdentifierValueAsString="5").get("Record", [])
        values = {f["FeatureName"]: f["ValueAsString"] for f in got}
        return values if values.get("tier") == "platinum" else None

    assert wait_for(updated, timeout_s=30, what="the update online") == \
        {"customer_id": "5", "EventTime": "100.5", "City": "c5", "tier": "platinum"}
    code, message, _ = error_of(rt.update_record, FeatureGroupName=name, RecordIdentifierValueAsString="99",
                                Features=[{"FeatureName": "tier", "ValueAsString": "x"}])
    assert code == "ResourceNotFound" and "'99'" in message

    # DeleteFeatureGroup answers at once; describe shows Deleting, then the group is gone
    started = time.perf_counter()
    sm.delete_feature_group(FeatureGroupName=name)
    answered = time.perf_counter() - started
    assert sm.describe_feature_group(FeatureGroupName=name)["FeatureGroupStatus"] == "Deleting"
    assert answered < 2.0, answered

    def gone():
        try:
            sm.describe_feature_group(FeatureGroupName=name)
            return False
        except sm.exceptions.ResourceNotFound:
            return True

    wait_for(gone, timeout_s=60, what="the background delete")
    assert error_of(sm.delete_feature_group, FeatureGroupName=name)[0] == "ResourceNotFound"
