"""The seed notebook's whole flow, unchanged, through the real SageMaker Python SDK v2 and v3.

Each SDK lives in its own venv (`make sdk-venvs`, under ~/.featurestream/cache/sdk-v2 and sdk-v3:
both are the `sagemaker` package and v2 needs pandas<3). The flow runs as a script with that
venv's python (tests/sdk/notebook_v*.py), pointed at the test stack only through the endpoint
variables a user would set. The four queries of the notebook's Querying step are compared with
an oracle computed here from what was ingested.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from featurestream.http.athena import START_WAIT_S
from tests.integration.procs import Proc
from tests.support.http_api import athena_client, server_env, start_server, stop_server

pytestmark = pytest.mark.integration
SDK_CACHE = Path.home() / ".featurestream" / "cache"
SCRIPTS = Path(__file__).resolve().parents[1] / "sdk"
T0 = 1_700_000_000.125
N = 10
DELETED, DELETED_AT = 3, T0 + 200.5
TRAVEL_TO = T0 + 50
LATEST = ("SELECT * FROM (SELECT *, row_number() OVER (PARTITION BY customer_id ORDER BY EventTime desc, "
          "Api_Invocation_Time DESC, write_time DESC) AS row_num FROM <table>) WHERE row_num = 1")
QUERIES = {
    "show": "SELECT * FROM <table>",
    "latest": LATEST,
    "latest_not_deleted": LATEST + " AND NOT is_deleted",
    "time_travel": ("SELECT * FROM (SELECT *, row_number() OVER (PARTITION BY customer_id ORDER BY EventTime desc, "
                    f"Api_Invocation_Time DESC, write_time DESC) AS row_num FROM <table> WHERE EventTime <= {TRAVEL_TO}) "
                    "WHERE row_num = 1 AND NOT is_deleted;"),
}


def _rows() -> list[dict]:
    """Every id at T0+i; even ids again 100 s later with another city (the notebook's two ingests)."""
    rows = [{"customer_id": i, "City": f"city-{i}", "EventTime": T0 + i} for i in range(N)]
    rows += [{"customer_id": i, "City": f"moved-{i}", "EventTime": T0 + 100 + i} for i in range(0, N, 2)]
    return rows


def _oracle(rows: list[dict]) -> dict[str, list[tuple]]:
    history = [(r["customer_id"], r["City"], r["EventTime"], False) for r in rows]
    history.append((DELETED, None, DELETED_AT, True))

    def latest(upto: float | None) -> list[tuple]:
        best: dict[int, tuple] = {}
        for row in history:
            if upto is not None and row[2] > upto:
                continue
            if row[0] not in best or row[2] > best[row[0]][2]:
                best[row[0]] = row
        return sorted(best.values())

    return {"show": sorted(history, key=lambda r: (r[0], r[2])), "latest": latest(None),
            "latest_not_deleted": [r for r in latest(None) if not r[3]],
            "time_travel": [r for r in latest(TRAVEL_TO) if not r[3]]}


def _as_tuples(records: list[dict]) -> list[tuple]:
    out = [(int(r["customer_id"]), None if r["city"] is None else str(r["city"]), float(r["eventtime"]),
            bool(r["is_deleted"])) for r in records]
    return sorted(out, key=lambda r: (r[0], r[2]))


def _failure(stderr: str) -> str:
    """The script's own traceback, without the SDK's telemetry noise (it cannot reach AWS offline)."""
    blocks = stderr.split("Traceback (most recent call last):")
    mine = [b for b in blocks if "notebook_v" in b]
    return ("Traceback (most recent call last):" + mine[-1]) if mine else stderr[-3000:]


@pytest.fixture(scope="module")
def served(stack, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sdk-notebooks")
    env = server_env(stack)
    processor = subprocess.Popen([sys.executable, "-m", "featurestream.cli", "process", "--metrics-port", "0"],
                                 env=env, stdout=subprocess.DEVNULL, stderr=open(tmp / "process.log", "wb"))  # noqa: SIM115
    sink = Proc(stack, ["sink", "--metrics-port", "0", "--max-age-s", "1"], tmp / "sink.log", extra_env=env)
    server, url = start_server(env, tmp, "--workers", "2")
    bucket = stack.offline_uri.removeprefix("s3://").split("/")[0]
    sdk_env = {**env, "AWS_ENDPOINT_URL_SAGEMAKER": url, "AWS_ENDPOINT_URL_SAGEMAKER_FEATURESTORE_RUNTIME": url,
               "AWS_ENDPOINT_URL_ATHENA": url, "AWS_ENDPOINT_URL_S3": stack.s3_endpoint_url,
               "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1", "PYTHONPATH": ""}
    yield {"env": sdk_env, "tmp": tmp, "bucket": bucket}
    stop_server(server)
    sink.stop()
    stop_server(processor)


@pytest.mark.parametrize("sdk", ["v2", "v3"])
def test_the_notebook_runs_unchanged(served, sdk, unique_name):
    python = SDK_CACHE / f"sdk-{sdk}" / "bin" / "python"
    assert python.exists(), f"{python} is missing: run `make setup` (its sdk-venvs step builds the SDK venvs)"
    rows = _rows()
    group = unique_name(f"notebook-{sdk}")
    spec = {"group": group, "rows": rows, "deleted": DELETED, "deleted_at": DELETED_AT, "queries": QUERIES,
            "offline_rows": len(rows) + 1, "s3_uri": f"s3://{served['bucket']}/sagemaker",
            "output": f"s3://{served['bucket']}/athena-results/{sdk}/",
            "role": "arn:aws:iam::123456789012:role/unused"}
    spec_file = served["tmp"] / f"{group}.json"
    spec_file.write_text(json.dumps(spec))
    run = subprocess.run([str(python), str(SCRIPTS / f"notebook_{sdk}.py"), str(spec_file)], env=served["env"],
                         capture_output=True, text=True, timeout=600, cwd=served["tmp"])
    assert run.returncode == 0, _failure(run.stderr)
    out = json.loads(run.stdout.strip().splitlines()[-1])
    print(f"\nSDK {sdk} ({out['version']}): notebook query seconds "
          + ", ".join(f"{k} {v:.2f}" for k, v in out["seconds"].items()))

    assert out["describe"]["status"] == "Created" and out["listed"]
    assert out["describe"]["catalog"]["Database"] == "sagemaker_featurestore"
    assert out["table_name"] == out["describe"]["catalog"]["TableName"]
    assert out["table_name"].startswith(group.replace("-", "_") + "_")
    got = {f["FeatureName"]: f["ValueAsString"] for f in out["get"]}
    assert got == {"customer_id": "1", "City": "city-1", "EventTime": repr(T0 + 1)}
    batch = {r["Record"][0]["ValueAsString"]: {f["FeatureName"]: f["ValueAsString"] for f in r["Record"]}
             for r in out["batch_get"]}
    assert {k: v["City"] for k, v in batch.items()} == {"0": "moved-0", "2": "moved-2"}

    oracle = _oracle(rows)
    for key in QUERIES:
        assert _as_tuples(out["queries"][key]) == oracle[key], key
    # Each query was done by the SDK's first poll (no 5 s wait in its wait()): StartQueryExecution
    # answers once the query is done, if within START_WAIT_S, so the first GetQueryExecution finds it
    # SUCCEEDED. Read from the server's own record of each execution, not from the notebook's wall
    # clock, which also counts the SDK's download and pandas parse (5.14 s for "show" under load 11).
    ran = _executions_of(served, out["table_name"])  # the notebook's queries, and its waits for the rows
    assert len([e for e in ran if "count(*) AS n" not in e["Query"]]) == len(QUERIES), [e["Query"] for e in ran]
    for execution in ran:
        took = execution["Statistics"]["TotalExecutionTimeInMillis"]
        assert execution["Status"]["State"] == "SUCCEEDED" and took < START_WAIT_S * 1000, (execution["Query"], took)

    assert out["last_update"] == {"Status": "Successful"}
    assert out["list_records"] == [str(i) for i in range(N) if i != DELETED]
    assert out["updated"] == {"customer_id": "1", "City": "city-1", "EventTime": repr(T0 + 1), "tier": "gold"}
    assert out["after_delete"] == "gone"


def _executions_of(served, table_name: str) -> list[dict]:
    """The server's record of every Athena execution whose query names ``table_name``."""
    env = served["env"]
    athena = athena_client({"url": env["AWS_ENDPOINT_URL_ATHENA"], "key": env["AWS_ACCESS_KEY_ID"],
                            "secret": env["AWS_SECRET_ACCESS_KEY"]})
    found, token = [], None
    while True:
        page = athena.list_query_executions(MaxResults=50, **({"NextToken": token} if token else {}))
        for execution_id in page["QueryExecutionIds"]:
            execution = athena.get_query_execution(QueryExecutionId=execution_id)["QueryExecution"]
            if table_name in execution["Query"]:
                found.append(execution)
        token = page.get("NextToken")
        if not token:
            return found
