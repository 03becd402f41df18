"""`featurestream serve` against the real stack, driven by unmodified boto3 clients.

The server and the online processor run as subprocesses (as in production); every request
is signed by botocore unless a test says otherwise.
"""

from __future__ import annotations

import http.client
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
from botocore.exceptions import ClientError

from schemas.infer import infer_definitions

# The server helpers live in tests/support/http_api.py (test_http_hardening.py uses them too);
# the short names this module always used are kept.
from tests.support.http_api import boto_clients as _clients
from tests.support.http_api import error_of as _code
from tests.support.http_api import healthy as _health
from tests.support.http_api import raw_request as _raw
from tests.support.http_api import server_env as _env
from tests.support.http_api import start_server as _start_server
from tests.support.http_api import stop_server as _stop
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration
SECOND_KEY, SECOND_SECRET = "AKIDSECONDCLIENT", "second-secret-value"


@pytest.fixture(scope="module")
def api(stack, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("http")
    creds = tmp / "credentials"
    creds.write_text(f"[second]\naws_access_key_id = {SECOND_KEY}\naws_secret_access_key = {SECOND_SECRET}\n")
    env = _env(stack)
    processor = subprocess.Popen([sys.executable, "-m", "featurestream.cli", "process", "--metrics-port", "0"],
                                 env=env, stdout=subprocess.DEVNULL, stderr=open(tmp / "process.log", "wb"))  # noqa: SIM115
    server, url = _start_server(env, tmp, "--workers", "2", "--credentials", str(creds))
    yield {"url": url, "key": env["AWS_ACCESS_KEY_ID"], "secret": env["AWS_SECRET_ACCESS_KEY"], "env": env,
           "tmp": tmp}
    _stop(server)
    _stop(processor)
    assert server.returncode is not None


@pytest.fixture(scope="module")
def clients(api):
    return _clients(api)


def _defs(frame: pd.DataFrame, rid: str, et: str) -> list[dict]:
    return [d.to_api() for d in infer_definitions(frame, record_identifier_name=rid, event_time_name=et)]


def _rows_to_records(frame: pd.DataFrame) -> list[list[dict]]:
    out = []
    for row in frame.to_dict(orient="records"):
        rec = []
        for k, v in row.items():
            if isinstance(v, list):
                rec.append({"FeatureName": k, "ValueAsStringList": [str(x) for x in v]})
            else:
                rec.append({"FeatureName": k, "ValueAsString": str(v)})
        out.append(rec)
    return out


def _as_dict(record: list[dict]) -> dict:
    return {f["FeatureName"]: f.get("ValueAsString", f.get("ValueAsStringList")) for f in record}


def _wait_record(rt, group: str, rid: str, want=lambda r: True, **kw) -> dict:
    def read():
        got = rt.get_record(FeatureGroupName=group, RecordIdentifierValueAsString=rid, **kw)
        return got if "Record" in got and want(got) else None

    return wait_for(read, timeout_s=30, what=f"record {rid} of {group} online")


# ---------------------------------------------------------------------- the main flow

def test_dataframes_to_groups_ingest_read_and_delete(clients, unique_name):
    sm, rt = clients
    now = time.time()
    customers = pd.DataFrame({"customer_id": ["c1", "c2", "c3"], "event_time": [now - 30, now - 20, now - 10],
                              "age": [31, 42, 53], "score": [0.5, 0.25, 1e-7], "city": ["Lyon", "Oslo", "Kyiv"]})
    orders = pd.DataFrame({"order_id": [100, 101], "ts": ["2031-01-01T00:00:00Z", "2031-01-02T00:00:00.5Z"],
                           "amount": [9.99, 120.0], "items": [["a", "b"], ["c"]]})
    g1, g2 = unique_name("customers"), unique_name("orders")
    arn = sm.create_feature_group(
        FeatureGroupName=g1, RecordIdentifierFeatureName="customer_id", EventTimeFeatureName="event_time",
        FeatureDefinitions=_defs(customers, "customer_id", "event_time"),
        OnlineStoreConfig={"EnableOnlineStore": True, "TtlDuration": {"Unit": "Days", "Value": 1}},
        OfflineStoreConfig={"S3StorageConfig": {"S3Uri": "s3://somebody-elses-bucket/fs"}},
        RoleArn="arn:aws:iam::123456789012:role/FeatureStoreRole")["FeatureGroupArn"]
    assert arn.endswith(f":feature-group/{g1}")
    sm.create_feature_group(FeatureGroupName=g2, RecordIdentifierFeatureName="order_id", EventTimeFeatureName="ts",
                            FeatureDefinitions=_defs(orders, "order_id", "ts"),
                            OnlineStoreConfig={"EnableOnlineStore": True})
    desc = sm.describe_feature_group(FeatureGroupName=arn)  # an ARN works wherever a name does
    assert desc["FeatureGroupName"] == g1 and desc["FeatureGroupStatus"] == "Created"
    assert desc["RoleArn"] == "arn:aws:iam::123456789012:role/FeatureStoreRole"
    assert desc["OnlineStoreConfig"]["TtlDuration"] == {"Unit": "Days", "Value": 1}
    assert desc["OfflineStoreConfig"]["S3StorageConfig"]["S3Uri"] == "s3://somebody-elses-bucket/fs"
    assert {d["FeatureName"]: d["FeatureType"] for d in desc["FeatureDefinitions"]} == {
        "customer_id": "String", "event_time": "Fractional", "age": "Integral", "score": "Fractional",
        "city": "String"}
    assert "OfflineStoreConfig" not in sm.describe_feature_group(FeatureGroupName=g2)

    # ingest: one group record by record, the other in one BatchWriteRecord
    for rec in _rows_to_records(customers):
        rt.put_record(FeatureGroupName=g1, Record=rec)
    res = rt.batch_write_record(Entries=[{"FeatureGroupName": g2, "Record": r} for r in _rows_to_records(orders)])
    assert res["Errors"] == [] and res["UnprocessedEntries"] == []

    got = _as_dict(_wait_record(rt, g1, "c2")["Record"])
    assert got["city"] == "Oslo" and int(got["age"]) == 42 and float(got["score"]) == 0.25
    assert float(got["event_time"]) == pytest.approx(now - 20)
    sub = _wait_record(rt, g1, "c3", FeatureNames=["age", "city"], ExpirationTimeResponse="Enabled")
    assert _as_dict(sub["Record"]) == {"age": "53", "city": "Kyiv"}
    expires = datetime.fromisoformat(sub["ExpiresAt"].replace("Z", "+00:00"))
    assert abs(expires.timestamp() - (now - 10 + 86400)) < 1
    order = _as_dict(_wait_record(rt, g2, "101")["Record"])
    assert order == {"order_id": "101", "ts": "2031-01-02T00:00:00.5Z", "amount": "120.0", "items": ["c"]}

    batch = rt.batch_get_record(Identifiers=[
        {"FeatureGroupName": g1, "RecordIdentifiersValueAsString": ["c1", "c3", "missing"], "FeatureNames": ["age"]},
        {"FeatureGroupName": g2, "RecordIdentifiersValueAsString": ["100", "101"]},
        {"FeatureGroupName": unique_name("nope"), "RecordIdentifiersValueAsString": ["x"]}],
        ExpirationTimeResponse="Enabled")
    found = {(r["FeatureGroupName"], r["RecordIdentifierValueAsString"]): r for r in batch["Records"]}
    assert set(found) == {(g1, "c1"), (g1, "c3"), (g2, "100"), (g2, "101")}
    assert _as_dict(found[(g1, "c1")]["Record"]) == {"age": "31"} and "ExpiresAt" in found[(g1, "c1")]
    assert "ExpiresAt" not in found[(g2, "100")]  # no TTL on that group
    assert [e["ErrorCode"] for e in batch["Errors"]] == ["ResourceNotFound"]
    assert batch["UnprocessedIdentifiers"] == []

    # a newer put overwrites; an older one does not
    rt.put_record(FeatureGroupName=g1, Record=[{"FeatureName": "customer_id", "ValueAsString": "c1"},
                                              {"FeatureName": "event_time", "ValueAsString": str(now)},
                                              {"FeatureName": "age", "ValueAsString": "32"}])
    newer = _as_dict(_wait_record(rt, g1, "c1", lambda r: _as_dict(r["Record"]).get("age") == "32")["Record"])
    assert "city" not in newer  # a put is a full overwrite

    # soft delete hides the record; hard delete of the other group removes it
    rt.delete_record(FeatureGroupName=g1, RecordIdentifierValueAsString="c2", EventTime=str(now + 1))
    wait_for(lambda: "Record" not in rt.get_record(FeatureGroupName=g1, RecordIdentifierValueAsString="c2"),
             timeout_s=30, what="soft-deleted c2 to disappear")
    rt.delete_record(FeatureGroupName=g2, RecordIdentifierValueAsString="100", EventTime="2031-02-01T00:00:00Z",
                     DeletionMode="HardDelete", TargetStores=["OnlineStore"])
    wait_for(lambda: "Record" not in rt.get_record(FeatureGroupName=g2, RecordIdentifierValueAsString="100"),
             timeout_s=30, what="hard-deleted order 100 to disappear")

    sm.delete_feature_group(FeatureGroupName=g1)
    sm.delete_feature_group(FeatureGroupName=g2)

    def described(name: str) -> str:  # SageMaker's way: Deleting while the delete runs, then gone
        try:
            return sm.describe_feature_group(FeatureGroupName=name)["FeatureGroupStatus"]
        except ClientError as exc:
            return exc.response["Error"]["Code"]

    for name in (g1, g2):
        assert described(name) in ("Deleting", "ResourceNotFound")
        wait_for(lambda name=name: described(name) == "ResourceNotFound", timeout_s=60,
                 what=f"{name} deleted in the background")

    def gone() -> bool:  # every worker forgets a deleted group within its cache age (2 s)
        try:
            rt.get_record(FeatureGroupName=g1, RecordIdentifierValueAsString="c1")
        except ClientError as exc:
            return (exc.response["Error"]["Code"], exc.response["ResponseMetadata"]["HTTPStatusCode"]) == \
                ("ResourceNotFound", 404)
        return False

    wait_for(gone, timeout_s=10, what="GetRecord of a deleted group to answer ResourceNotFound")


# ---------------------------------------------------------------------- control plane

def _simple_group(sm, name: str, **kw) -> None:
    sm.create_feature_group(FeatureGroupName=name, RecordIdentifierFeatureName="id", EventTimeFeatureName="et",
                            FeatureDefinitions=[{"FeatureName": "id", "FeatureType": "String"},
                                                {"FeatureName": "et", "FeatureType": "String"}],
                            OnlineStoreConfig={"EnableOnlineStore": True}, **kw)


def test_list_update_and_control_plane_errors(clients, unique_name):
    sm, rt = clients
    tag = unique_name("lst")
    names = [f"{tag}-{i}" for i in range(5)]
    for n in names:
        _simple_group(sm, n)
    pages, seen, token = 0, [], None
    while True:
        kw = {"NextToken": token} if token else {}
        page = sm.list_feature_groups(NameContains=tag, MaxResults=2, SortBy="Name", SortOrder="Ascending", **kw)
        seen += [s["FeatureGroupName"] for s in page["FeatureGroupSummaries"]]
        pages += 1
        token = page.get("NextToken")
        if not token:
            break
    assert seen == names and pages == 3
    paged = [s["FeatureGroupName"] for p in sm.get_paginator("list_feature_groups").paginate(
        NameContains=tag, PaginationConfig={"PageSize": 2}) for s in p["FeatureGroupSummaries"]]
    assert sorted(paged) == names

    sm.update_feature_group(FeatureGroupName=names[0],
                            FeatureAdditions=[{"FeatureName": "added", "FeatureType": "Integral"}],
                            OnlineStoreConfig={"TtlDuration": {"Unit": "Hours", "Value": 3}})
    desc = sm.describe_feature_group(FeatureGroupName=names[0])
    assert desc["FeatureDefinitions"][-1] == {"FeatureName": "added", "FeatureType": "Integral"}
    assert desc["OnlineStoreConfig"]["TtlDuration"] == {"Unit": "Hours", "Value": 3}
    # the new feature is usable at once, whichever worker takes the put
    for i in range(4):
        rt.put_record(FeatureGroupName=names[0], Record=[{"FeatureName": "id", "ValueAsString": f"r{i}"},
                                                        {"FeatureName": "et", "ValueAsString": "2031-01-01T00:00:00Z"},
                                                        {"FeatureName": "added", "ValueAsString": "7"}])

    assert _code(_simple_group, sm, names[1])[0] == "ResourceInUse"
    code, msg, status = _code(sm.create_feature_group, FeatureGroupName=unique_name("bad"),
                              RecordIdentifierFeatureName="id", EventTimeFeatureName="missing",
                              FeatureDefinitions=[{"FeatureName": "id", "FeatureType": "String"}],
                              OnlineStoreConfig={"EnableOnlineStore": True})
    assert (code, status) == ("ValidationException", 400) and "missing" in msg
    assert _code(sm.create_feature_group, FeatureGroupName=unique_name("none"), RecordIdentifierFeatureName="id",
                 EventTimeFeatureName="et", FeatureDefinitions=[{"FeatureName": "id", "FeatureType": "String"},
                                                               {"FeatureName": "et", "FeatureType": "String"}]
                 )[0] == "ValidationException"  # neither store enabled
    assert _code(sm.update_feature_group, FeatureGroupName=names[0],
                 FeatureAdditions=[{"FeatureName": "id", "FeatureType": "Integral"}])[0] == "ValidationException"
    assert _code(sm.update_feature_group, FeatureGroupName=unique_name("ghost"))[0] == "ResourceNotFound"
    assert _code(sm.delete_feature_group, FeatureGroupName=unique_name("ghost"))[0] == "ResourceNotFound"
    assert _code(sm.describe_feature_group, FeatureGroupName="../../etc")[0] == "ValidationException"
    assert _code(sm.list_feature_groups, NextToken="not-a-token")[0] == "ValidationException"
    for n in names:
        sm.delete_feature_group(FeatureGroupName=n)


# ---------------------------------------------------------------------- runtime errors

def test_runtime_validation_errors_as_the_sdk_shows_them(clients, unique_name):
    sm, rt = clients
    g = unique_name("err")
    sm.create_feature_group(FeatureGroupName=g, RecordIdentifierFeatureName="id", EventTimeFeatureName="et",
                            FeatureDefinitions=[{"FeatureName": "id", "FeatureType": "Integral"},
                                                {"FeatureName": "et", "FeatureType": "String"},
                                                {"FeatureName": "n", "FeatureType": "Fractional"}],
                            OnlineStoreConfig={"EnableOnlineStore": True})
    ok = [{"FeatureName": "id", "ValueAsString": "1"}, {"FeatureName": "et", "ValueAsString": "2031-01-01T00:00:00Z"}]
    cases = {
        "NaN": [*ok, {"FeatureName": "n", "ValueAsString": "NaN"}],
        "huge": [*ok, {"FeatureName": "n", "ValueAsString": "1e999"}],
        "word": [{"FeatureName": "id", "ValueAsString": "one"}, ok[1]],
        "overflow": [{"FeatureName": "id", "ValueAsString": str(2**64)}, ok[1]],
        "bad time": [ok[0], {"FeatureName": "et", "ValueAsString": "2031-13-45"}],
        "unknown": [*ok, {"FeatureName": "zzz", "ValueAsString": "1"}],
        "missing id": [ok[1]],
        "big": [*ok, {"FeatureName": "n", "ValueAsString": "1" * 400_000}],
    }
    for what, record in cases.items():
        code, msg, status = _code(rt.put_record, FeatureGroupName=g, Record=record)
        assert (code, status) == ("ValidationError", 400), what
        assert g in msg, (what, msg)
    assert _code(rt.put_record, FeatureGroupName=g, Record=ok, TtlDuration={"Unit": "Years", "Value": 1})[0] \
        == "ValidationError"
    assert _code(rt.put_record, FeatureGroupName=unique_name("ghost"), Record=ok)[:3:2] == ("ResourceNotFound", 404)
    assert _code(rt.get_record, FeatureGroupName=g, RecordIdentifierValueAsString="1",
                 FeatureNames=["nope"])[0] == "ValidationError"
    assert _code(rt.get_record, FeatureGroupName=g, RecordIdentifierValueAsString="x")[0] == "ValidationError"
    assert _code(rt.delete_record, FeatureGroupName=g, RecordIdentifierValueAsString="1",
                 EventTime="not a time")[0] == "ValidationError"
    assert _code(rt.get_record, FeatureGroupName="a" * 65, RecordIdentifierValueAsString="1")[0] == "ValidationError"
    res = rt.batch_write_record(Entries=[
        {"FeatureGroupName": g, "Record": ok},
        {"FeatureGroupName": g, "Record": [*ok, {"FeatureName": "n", "ValueAsString": "inf"}]},
        {"FeatureGroupName": unique_name("ghost"), "Record": ok}])
    assert [e["ErrorCode"] for e in res["Errors"]] == ["ValidationError", "ResourceNotFound"]
    assert res["UnprocessedEntries"] == []
    assert "Record" not in rt.get_record(FeatureGroupName=g, RecordIdentifierValueAsString="404")
    sm.delete_feature_group(FeatureGroupName=g)


def test_malformed_requests_get_clear_errors(api):
    cases = [
        ("PUT", "/FeatureGroup/x", b"\xff\xfe garbage", "", 400, "ValidationError"),
        ("PUT", "/FeatureGroup/x", b"[1, 2]", "", 400, "ValidationError"),
        ("PUT", "/FeatureGroup/x", b'{"Record": NaN}', "", 400, "ValidationError"),
        ("POST", "/BatchGetRecord", b'{"Identifiers": "x"}', "", 400, "ValidationError"),
        ("POST", "/BatchWriteRecord", b'{"Entries": []}', "", 400, "ValidationError"),
        ("GET", "/FeatureGroup/a%2F..%2Fb", b"", "RecordIdentifierValueAsString=1", 400, "ValidationError"),
        ("GET", "/FeatureGroup/x", b"", "RecordIdentifierValueAsString=1&RecordIdentifierValueAsString=2", 400,
         "ValidationError"),
        ("GET", "/nowhere", b"", "", 404, "UnknownOperationException"),
        ("PUT", "/FeatureGroup/x", b"{" + b" " * (3 * 1024 * 1024) + b"}", "", 413, "ValidationError"),
    ]
    for method, path, body, query, status, code in cases:
        got_status, headers, payload = _raw(api, method, path, body, query)
        assert (got_status, headers.get("x-amzn-ErrorType")) == (status, code), (path, payload[:200])
    status, headers, _ = _raw(api, "POST", "/", b"{}", headers={"X-Amz-Target": "SageMaker.CreateEndpoint",
                                                                "Content-Type": "application/x-amz-json-1.1"})
    assert (status, headers.get("x-amzn-ErrorType")) == (400, "UnknownOperationException")


# ---------------------------------------------------------------------- authentication

def test_bad_signatures_are_refused_as_aws_refuses_them(api, clients, monkeypatch):
    sm, _ = clients
    sm.list_feature_groups(MaxResults=1)  # signed with the configured pair: accepted
    second_sm, _ = _clients(api, key=SECOND_KEY, secret=SECOND_SECRET)
    second_sm.list_feature_groups(MaxResults=1)  # a pair from --credentials: accepted
    wrong_sm, wrong_rt = _clients(api, secret="not-the-secret")
    assert _code(wrong_sm.list_feature_groups)[:3:2] == ("InvalidSignatureException", 403)
    code, msg, status = _code(wrong_rt.get_record, FeatureGroupName="g", RecordIdentifierValueAsString="1")
    assert (code, status) == ("InvalidSignatureException", 403) and "does not match" in msg
    unknown_sm, _ = _clients(api, key="AKIDUNKNOWN")
    assert _code(unknown_sm.list_feature_groups)[:3:2] == ("UnrecognizedClientException", 403)

    status, headers, body = _raw(api, "GET", "/FeatureGroup/g", query="RecordIdentifierValueAsString=1", signed=False)
    assert (status, headers.get("x-amzn-ErrorType")) == (403, "MissingAuthenticationTokenException")
    status, headers, body = _raw(api, "GET", "/FeatureGroup/g", query="RecordIdentifierValueAsString=1",
                                 when=datetime.now(UTC) - timedelta(minutes=20))
    assert (status, headers.get("x-amzn-ErrorType")) == (403, "InvalidSignatureException")
    assert b"Signature expired" in body

    import botocore.auth

    real = botocore.auth.datetime.datetime

    class Skewed(real):  # the SDK's clock 20 minutes slow
        @classmethod
        def utcnow(cls):
            return real.utcnow() - timedelta(minutes=20)

        @classmethod
        def now(cls, tz=None):
            return real.now(tz) - timedelta(minutes=20)

    monkeypatch.setattr(botocore.auth.datetime, "datetime", Skewed)
    code, msg, status = _code(sm.list_feature_groups)
    assert (code, status) == ("InvalidSignatureException", 403) and "Signature expired" in msg


def test_no_auth_mode_warns_loudly_and_accepts_unsigned(stack, tmp_path):
    proc, url = _start_server(_env(stack), tmp_path, "--no-auth", "--workers", "1")
    try:
        req = urllib.request.Request(url + "/", data=b"{}", method="POST",
                                     headers={"X-Amz-Target": "SageMaker.ListFeatureGroups"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            assert resp.status == 200 and b"FeatureGroupSummaries" in resp.read()
    finally:
        _stop(proc)
    log = next(tmp_path.glob("serve-*.log")).read_text()
    assert "AUTHENTICATION IS OFF" in log


def _alive(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie (an orphan's exit status may wait for a reaper)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _port_closed(url: str) -> bool:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=1).close()
        return False
    except OSError:
        return True


def test_serve_workers_die_with_a_parent_killed_with_kill_9(stack, tmp_path):
    import signal

    from tests.integration.procs import child_pids

    proc, url = _start_server(_env(stack), tmp_path, "--no-auth", "--workers", "2")
    workers: list[int] = []
    try:
        workers = wait_for(lambda: len(c := child_pids(proc.pid)) == 2 and c, timeout_s=30,
                           what="serve's two forked workers")
        assert _health(url)
        os.kill(proc.pid, signal.SIGKILL)  # the parent cannot stop its workers now
        proc.wait(timeout=10)
        wait_for(lambda: _port_closed(url), timeout_s=20, what=f"the port of {url} to close (workers {workers})")
        wait_for(lambda: not any(_alive(w) for w in workers), timeout_s=20, what=f"workers {workers} to exit")
    finally:
        for pid in workers:  # left serving if the test failed
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        _stop(proc)


def test_serve_refuses_to_start_without_keys_or_with_a_bad_credentials_file(stack, tmp_path):
    env = _env(stack, AWS_ACCESS_KEY_ID="", AWS_SECRET_ACCESS_KEY="")
    run = [sys.executable, "-m", "featurestream.cli", "serve", "--port", "0"]
    res = subprocess.run(run, env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "--no-auth" in res.stderr
    bad = tmp_path / "creds"
    bad.write_text("[x]\naws_access_key_id = A\n")
    res = subprocess.run([*run, "--credentials", str(bad)], env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "aws_secret_access_key" in res.stderr


# ---------------------------------------------------------------------- operations

def test_health_ready_and_metrics(api, clients):
    sm, _ = clients
    sm.list_feature_groups(MaxResults=1)
    with urllib.request.urlopen(api["url"] + "/ready", timeout=10) as resp:
        assert resp.status == 200 and b'"redis": "ok"' in resp.read()

    def scraped() -> bool:
        with urllib.request.urlopen(api["url"] + "/metrics", timeout=10) as resp:
            text = resp.read().decode()
        return 'featurestream_http_requests_total{operation="ListFeatureGroups",status="200"}' in text

    wait_for(scraped, timeout_s=10, what="ListFeatureGroups in /metrics")


def test_a_service_that_is_down_gives_service_unavailable(stack, tmp_path, clients):
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    dead_port = dead.getsockname()[1]
    dead.close()  # nothing listens there now
    env = _env(stack, FEATURESTREAM_REDIS_URL=f"redis://127.0.0.1:{dead_port}/0")
    proc, url = _start_server(env, tmp_path, "--workers", "1")
    try:
        api = {"url": url, "key": env["AWS_ACCESS_KEY_ID"], "secret": env["AWS_SECRET_ACCESS_KEY"]}
        sm, rt = _clients(api)
        name = f"down-{os.getpid()}-{int(time.time())}"
        _simple_group(sm, name)
        started = time.monotonic()
        code, msg, status = _code(rt.get_record, FeatureGroupName=name, RecordIdentifierValueAsString="1")
        # the client learns which service failed, never where it runs; the server log has that
        assert (code, status) == ("ServiceUnavailable", 503) and "redis is unavailable" in msg
        assert str(dead_port) not in msg and "127.0.0.1" not in msg
        assert time.monotonic() - started < 15
        status, _, body = _raw(api, "GET", "/ready", signed=False)
        assert status == 503 and b'"redis": "unavailable"' in body and str(dead_port).encode() not in body
        wait_for(lambda: str(dead_port) in next(tmp_path.glob("serve-*.log")).read_text(), timeout_s=10,
                 what="the Redis address in the server log")
        code, msg, status = _code(sm.delete_feature_group, FeatureGroupName=name)  # it wipes the online data
        assert (code, status) == ("ServiceUnavailable", 503)
        clients[0].delete_feature_group(FeatureGroupName=name)  # through a server whose Redis is up
    finally:
        _stop(proc)


def test_burst_of_malformed_requests_neither_crashes_nor_starves_good_ones(api, clients, unique_name):
    sm, rt = clients
    g = unique_name("burst")
    _simple_group(sm, g)
    rt.put_record(FeatureGroupName=g, Record=[{"FeatureName": "id", "ValueAsString": "k"},
                                             {"FeatureName": "et", "ValueAsString": "2031-01-01T00:00:00Z"}])
    _wait_record(rt, g, "k")
    host, port = api["url"].removeprefix("http://").split(":")

    def good_latencies(n: int) -> list[float]:
        out = []
        for _ in range(n):
            t = time.perf_counter()
            assert "Record" in rt.get_record(FeatureGroupName=g, RecordIdentifierValueAsString="k")
            out.append(time.perf_counter() - t)
        return sorted(out)

    quiet = good_latencies(40)
    stop = threading.Event()
    sent = [0]
    junk = [b"\x00\x01\x02garbage\r\n\r\n", b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
            b"PUT /FeatureGroup/" + b"a" * 70000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
            b"POST /BatchGetRecord HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n{{{{{{{{{{",
            b"PUT /FeatureGroup/x HTTP/1.1\r\nHost: x\r\nAuthorization: AWS4-HMAC-SHA256 junk\r\n"
            b"Content-Length: 2\r\n\r\n{}"]

    def attacker(seed: int) -> None:
        deadline = time.monotonic() + 20
        i = seed
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                with socket.create_connection((host, int(port)), timeout=2) as s:
                    s.sendall(junk[i % len(junk)])
                    s.recv(256)
            except OSError:
                pass
            i += 1
            sent[0] += 1

    threads = [threading.Thread(target=attacker, args=(n,), daemon=True) for n in range(6)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.2)
        loud = good_latencies(40)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=5)
    assert sent[0] > 50
    assert _health(api["url"])
    q50, l50 = quiet[len(quiet) // 2], loud[len(loud) // 2]
    # "not much slower": the median good request stays within a few ms of the quiet one.
    assert l50 < max(5 * q50, q50 + 0.02), (q50, l50)
    sm.delete_feature_group(FeatureGroupName=g)


def _handovers(url: str) -> float:
    with urllib.request.urlopen(url + "/metrics", timeout=10) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith("featurestream_http_connections_handed_over_total "):
                return float(line.split()[1])
    raise AssertionError("no featurestream_http_connections_handed_over_total in /metrics")


def test_the_sdks_requests_stay_in_the_fast_lane_and_the_others_are_handed_over(stack, tmp_path, unique_name):
    """boto3's requests are all of the plain kind the fast lane answers (fast_lane.py): a botocore change that
    sent them to aiohttp's server would cost every request its ~30 % and no other test would notice."""
    env = _env(stack)
    server, url = _start_server(env, tmp_path, "--workers", "1")
    try:
        api = {"url": url, "key": env["AWS_ACCESS_KEY_ID"], "secret": env["AWS_SECRET_ACCESS_KEY"]}
        sm, rt = _clients(api)
        name = unique_name("lane")
        _simple_group(sm, name)
        assert sm.describe_feature_group(FeatureGroupName=name)["FeatureGroupName"] == name
        for i in range(5):
            rt.put_record(FeatureGroupName=name, Record=[{"FeatureName": "id", "ValueAsString": f"r{i}"},
                                                         {"FeatureName": "et", "ValueAsString": "2026-12-05T00:00:00Z"}])
        assert "Record" not in rt.get_record(FeatureGroupName=name, RecordIdentifierValueAsString="never-written")
        assert _code(rt.get_record, FeatureGroupName=unique_name("nope"), RecordIdentifierValueAsString="x")[2] == 404
        assert _handovers(url) == 0
        # A chunked body is aiohttp's to read: its connection is handed over, and answered as before.
        host, port = url.removeprefix("http://").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        conn.request("PUT", f"/FeatureGroup/{name}", body=iter([b'{"Record":', b"[]}"]), encode_chunked=True,
                     headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        assert (resp.status, resp.getheader("x-amzn-ErrorType")) == (403, "MissingAuthenticationTokenException")
        resp.read()
        conn.close()
        assert _handovers(url) == 1
    finally:
        _stop(server)
