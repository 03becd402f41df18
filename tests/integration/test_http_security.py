"""`featurestream serve` as an attacker or a misconfigured client meets it: scoped keys, huge batch
answers, bodies that never arrive, clients that leave mid-request, probes of /ready.

The server and the online processor run as subprocesses against the real stack; permitted and
refused calls are made with unmodified boto3, the rest over raw sockets.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import zlib
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pytest

from featurestream.http.sigv4 import sign
from tests.support.http_api import (
    boto_clients,
    error_of,
    raw_request,
    server_env,
    start_server,
    stop_server,
)
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration
MAX_RESPONSE = 1024 * 1024  # the smallest bound serve accepts: a few dozen 40 KB records exceed it
BODY_TIMEOUT_S = 2.0
READER = ("AKIDREADONLY", "reader-secret")
ORDERS = ("AKIDORDERSTEAM", "orders-secret")
CREDENTIALS = f"""\
[reader]
aws_access_key_id = {READER[0]}
aws_secret_access_key = {READER[1]}
featurestream_read = *

[orders-team]
aws_access_key_id = {ORDERS[0]}
aws_secret_access_key = {ORDERS[1]}
featurestream_read = orders-*
featurestream_write = orders-*
featurestream_admin = orders-*
"""


@pytest.fixture(scope="module")
def api(stack, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("http-security")
    creds = tmp / "credentials"
    creds.write_text(CREDENTIALS)
    env = server_env(stack)
    processor = subprocess.Popen([sys.executable, "-m", "featurestream.cli", "process", "--metrics-port", "0"],
                                 env=env, stdout=subprocess.DEVNULL, stderr=open(tmp / "process.log", "wb"))  # noqa: SIM115
    server, url = start_server(env, tmp, "--workers", "2", "--credentials", str(creds),
                               "--max-response-bytes", str(MAX_RESPONSE), "--body-timeout", str(BODY_TIMEOUT_S))
    yield {"url": url, "key": env["AWS_ACCESS_KEY_ID"], "secret": env["AWS_SECRET_ACCESS_KEY"], "tmp": tmp,
           "log": next(tmp.glob("serve-*.log"))}
    stop_server(server)
    stop_server(processor)


def _group(sm, name: str, *extra: str) -> None:
    sm.create_feature_group(FeatureGroupName=name, RecordIdentifierFeatureName="id", EventTimeFeatureName="et",
                            FeatureDefinitions=[{"FeatureName": n, "FeatureType": "String"} for n in ("id", "et", *extra)],
                            OnlineStoreConfig={"EnableOnlineStore": True})


def _record(rid: str, et: str = "2031-01-01T00:00:00Z", **values: str) -> list[dict]:
    return [{"FeatureName": "id", "ValueAsString": rid}, {"FeatureName": "et", "ValueAsString": et},
            *({"FeatureName": k, "ValueAsString": v} for k, v in values.items())]


def _value(rt, group: str, rid: str, feature: str) -> str | None:
    got = rt.get_record(FeatureGroupName=group, RecordIdentifierValueAsString=rid)
    return {f["FeatureName"]: f["ValueAsString"] for f in got.get("Record", [])}.get(feature)


def _metrics(api) -> str:
    with urllib.request.urlopen(api["url"] + "/metrics", timeout=10) as resp:
        return resp.read().decode()


def _counter(text: str, status: str) -> float:
    """Sum of featurestream_http_requests_total over operations for one status."""
    return sum(float(v) for v in re.findall(
        rf'featurestream_http_requests_total{{operation="[^"]*",status="{status}"}} ([0-9.e+]+)', text))


# ---------------------------------------------------------------------- permissions

def test_a_read_only_key_reads_everything_and_changes_nothing(api, unique_name):
    admin_sm, admin_rt = boto_clients(api)
    sm, rt = boto_clients(api, key=READER[0], secret=READER[1])
    group = unique_name("customers")
    _group(admin_sm, group, "age")
    admin_rt.put_record(FeatureGroupName=group, Record=_record("c1", age="40"))
    wait_for(lambda: _value(rt, group, "c1", "age") == "40", timeout_s=30, what="c1 readable with the read key")
    assert sm.describe_feature_group(FeatureGroupName=group)["FeatureGroupName"] == group
    assert [s["FeatureGroupName"] for s in sm.list_feature_groups(NameContains=group)["FeatureGroupSummaries"]] == \
        [group]
    batch = rt.batch_get_record(Identifiers=[{"FeatureGroupName": group, "RecordIdentifiersValueAsString": ["c1"]}])
    assert len(batch["Records"]) == 1

    refused = [
        (rt.put_record, dict(FeatureGroupName=group, Record=_record("c1", "2031-02-01T00:00:00Z", age="99"))),
        (rt.delete_record, dict(FeatureGroupName=group, RecordIdentifierValueAsString="c1",
                                EventTime="2031-02-01T00:00:00Z")),
        (rt.batch_write_record, dict(Entries=[{"FeatureGroupName": group, "Record": _record("c2", age="99")}])),
        (sm.update_feature_group, dict(FeatureGroupName=group, FeatureAdditions=[{"FeatureName": "x",
                                                                                  "FeatureType": "String"}])),
        (sm.delete_feature_group, dict(FeatureGroupName=group)),
        (_group, (sm, unique_name("anything"))),
    ]
    for call, args in refused:
        code, message, status = error_of(call, *args) if isinstance(args, tuple) else error_of(call, **args)
        client = args[0] if isinstance(args, tuple) else call.__self__
        assert (code, status) == (_forbidden(client), 403), (call, message)
        assert "this access key does not have" in message
    # Nothing was published: each refused write was newer than what the admin writes now, so had
    # one been published, these older values could never show.
    admin_rt.put_record(FeatureGroupName=group, Record=_record("c1", "2031-01-15T00:00:00Z", age="41"))
    admin_rt.put_record(FeatureGroupName=group, Record=_record("c2", "2030-01-01T00:00:00Z", age="7"))
    wait_for(lambda: _value(rt, group, "c1", "age") == "41", timeout_s=30, what="c1 = 41 (refused put/delete absent)")
    wait_for(lambda: _value(rt, group, "c2", "age") == "7", timeout_s=30, what="c2 = 7 (refused batch absent)")
    assert [d["FeatureName"] for d in sm.describe_feature_group(FeatureGroupName=group)["FeatureDefinitions"]] == \
        ["id", "et", "age"]
    admin_sm.delete_feature_group(FeatureGroupName=group)


def _forbidden(client) -> str:
    """The code SageMaker answers a refused call with: AccessForbidden on the runtime API,
    AccessDeniedException on the control plane (JSON 1.1)."""
    return "AccessDeniedException" if client.meta.service_model.service_name == "sagemaker" else "AccessForbidden"


def test_a_key_scoped_to_orders_cannot_touch_customers(api, unique_name):
    admin_sm, admin_rt = boto_clients(api)
    sm, rt = boto_clients(api, key=ORDERS[0], secret=ORDERS[1])
    tag = unique_name("t")
    orders, customers = f"orders-{tag}", f"customers-{tag}"
    _group(sm, orders, "amount")  # admin of orders-*: may create it
    _group(admin_sm, customers, "age")
    admin_rt.put_record(FeatureGroupName=customers, Record=_record("c1", age="age-of-c1"))
    rt.put_record(FeatureGroupName=orders, Record=_record("o1", amount="9.5"))
    wait_for(lambda: _value(rt, orders, "o1", "amount") == "9.5", timeout_s=30, what="o1 readable")

    for call, kw in [(rt.get_record, dict(FeatureGroupName=customers, RecordIdentifierValueAsString="c1")),
                     (rt.put_record, dict(FeatureGroupName=customers, Record=_record("c9"))),
                     (sm.describe_feature_group, dict(FeatureGroupName=customers)),
                     (sm.delete_feature_group, dict(FeatureGroupName=customers)),
                     # a group that does not exist is refused too: a key learns nothing outside its scope
                     (rt.get_record, dict(FeatureGroupName=f"customers-{tag}-none", RecordIdentifierValueAsString="1")),
                     (rt.batch_get_record, dict(Identifiers=[
                         {"FeatureGroupName": orders, "RecordIdentifiersValueAsString": ["o1"]},
                         {"FeatureGroupName": customers, "RecordIdentifiersValueAsString": ["c1"]}]))]:
        code, message, status = error_of(call, **kw)
        assert (code, status) == (_forbidden(call.__self__), 403) and customers in message, (call, message)
        assert "'c1'" not in message and "age-of-c1" not in message

    # a batch write naming customers is refused whole: its orders entry is not published either.
    # The refused entry is newer than the allowed put that follows; had it been published, the
    # allowed (older) value could never show.
    code, _, status = error_of(rt.batch_write_record, Entries=[
        {"FeatureGroupName": orders, "Record": _record("o2", "2031-06-01T00:00:00Z", amount="refused")},
        {"FeatureGroupName": customers, "Record": _record("c2")}])
    assert (code, status) == ("AccessForbidden", 403)
    rt.put_record(FeatureGroupName=orders, Record=_record("o2", "2031-01-01T00:00:00Z", amount="allowed"))
    wait_for(lambda: _value(rt, orders, "o2", "amount") == "allowed", timeout_s=30, what="o2 = allowed")

    listed = [s["FeatureGroupName"] for s in sm.list_feature_groups(NameContains=tag)["FeatureGroupSummaries"]]
    assert listed == [orders]  # customers exists but is not this key's to see
    batch = rt.batch_get_record(Identifiers=[{"FeatureGroupName": orders, "RecordIdentifiersValueAsString": ["o1"]}])
    assert [r["RecordIdentifierValueAsString"] for r in batch["Records"]] == ["o1"]
    assert error_of(_group, sm, f"customers-{tag}-new")[::2] == ("AccessDeniedException", 403)
    sm.delete_feature_group(FeatureGroupName=orders)
    admin_sm.delete_feature_group(FeatureGroupName=customers)


# ---------------------------------------------------------------------- bounded BatchGetRecord

def test_batch_get_answers_each_record_once_within_the_bound_and_the_rest_on_asking_again(api, unique_name):
    sm, rt = boto_clients(api)
    group = unique_name("wide")
    _group(sm, group, "blob", "tag")
    ids = [f"id-{i:02d}" for i in range(60)]
    blob = "x" * 40_000  # 60 x 40 KB = 2.4 MB of records: more than twice the 1 MiB bound
    for rid in ids:
        rt.put_record(FeatureGroupName=group, Record=_record(rid, blob=blob, tag=rid))

    def read_all(identifiers: list[dict]) -> tuple[dict, int]:
        """Ask, then ask again for the unprocessed ones, until none are left; (records, requests)."""
        got: dict[tuple, dict] = {}
        asked = 0
        while identifiers:
            res = rt.batch_get_record(Identifiers=identifiers)
            asked += 1
            for r in res["Records"]:
                key = (r["RecordIdentifierValueAsString"], tuple(sorted(f["FeatureName"] for f in r["Record"])))
                assert key not in got, f"{key} answered twice"
                got[key] = {f["FeatureName"]: f["ValueAsString"] for f in r["Record"]}
            assert res["Errors"] == []
            identifiers = res["UnprocessedIdentifiers"]
            assert asked < 100, "re-asking does not make progress"
        return got, asked

    wait_for(lambda: len(read_all([{"FeatureGroupName": group, "RecordIdentifiersValueAsString": ids}])[0]) == 60,
             timeout_s=60, what="all 60 records online")

    # The probe's request: 100 entries naming the same group and ids (here 60 of 40 KB: 240 MB
    # if answered as asked), some asking for the same features in another order.
    entries = [{"FeatureGroupName": group, "RecordIdentifiersValueAsString": ids}] * 97 + \
        [{"FeatureGroupName": group, "RecordIdentifiersValueAsString": ids, "FeatureNames": names}
         for names in (["blob", "id"], ["id", "blob"], ["id", "blob", "blob"])]
    status, _, body = raw_request(api, "POST", "/BatchGetRecord", json.dumps({"Identifiers": entries}).encode(),
                                  headers={"Content-Type": "application/json"})
    assert status == 200
    assert len(body) <= MAX_RESPONSE, len(body)
    answer = json.loads(body)
    answered = [(r["RecordIdentifierValueAsString"], len(r["Record"])) for r in answer["Records"]]
    assert 0 < len(answer["Records"]) < 120 and len(answered) == len(set(answered))
    unprocessed = answer["UnprocessedIdentifiers"]
    assert all(len(u["RecordIdentifiersValueAsString"]) <= 100 for u in unprocessed) and len(unprocessed) <= 100
    # every (entry, id) asked is either answered or listed, never both, never lost: 60 ids x 2 feature sets
    full = {r["RecordIdentifierValueAsString"] for r in answer["Records"] if len(r["Record"]) == 4}
    subset = {r["RecordIdentifierValueAsString"] for r in answer["Records"] if len(r["Record"]) == 2}
    left_full = [i for u in unprocessed if "FeatureNames" not in u for i in u["RecordIdentifiersValueAsString"]]
    left_subset = [i for u in unprocessed if u.get("FeatureNames") == ["blob", "id"]
                   for i in u["RecordIdentifiersValueAsString"]]
    assert sorted([*full, *left_full]) == ids and sorted([*subset, *left_subset]) == ids

    got, asked = read_all(entries)
    assert asked >= 3  # 2 x 2.4 MB cannot come in fewer 1 MiB answers
    assert len(got) == 120
    assert all(v == {"id": k[0], "et": "2031-01-01T00:00:00Z", "blob": blob, "tag": k[0]}
               for k, v in got.items() if len(k[1]) == 4)
    assert all(v == {"id": k[0], "blob": blob} for k, v in got.items() if len(k[1]) == 2)
    sm.delete_feature_group(FeatureGroupName=group)


# ---------------------------------------------------------------------- bodies and connections

def _connect(api) -> socket.socket:
    host, port = api["url"].removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=30)


def test_a_body_shorter_than_its_content_length_is_answered_408_and_closed(api):
    # Signed by a known key, so that the header passes and the body is waited for (the signature
    # itself, over a body that never comes, is never checked).
    headers = sign("POST", "/BatchGetRecord", "", {"Host": "x", "Content-Length": "1000"}, b"",
                   access_key=api["key"], secret=api["secret"], region="us-east-1", now=datetime.now(UTC))
    with _connect(api) as s:
        started = time.monotonic()
        s.sendall(_head("POST", "/BatchGetRecord", headers) + b'{"Identifiers"')
        received = b""
        while chunk := s.recv(4096):  # returns b"" once the server closes; the socket times out at 30 s
            received += chunk
        elapsed = time.monotonic() - started
    assert received.startswith(b"HTTP/1.1 408"), received[:200]
    assert b"RequestTimeout" in received and b"Connection: close" in received
    assert BODY_TIMEOUT_S - 0.1 <= elapsed < BODY_TIMEOUT_S + 15, elapsed


def test_clients_that_leave_mid_request_are_counted_apart_and_leave_no_traceback(api):
    before = _metrics(api)
    # signed by a known key: the header passes and the body is being read when the client leaves
    headers = sign("PUT", "/FeatureGroup/x", "", {"Host": "x", "Content-Length": "500"}, b"",
                   access_key=api["key"], secret=api["secret"], region="us-east-1", now=datetime.now(UTC))
    for n in range(20):
        with _connect(api) as s:
            s.sendall(_head("PUT", "/FeatureGroup/x", headers) + b"{" * (n + 1))
        # closed with the body unfinished
    wait_for(lambda: _counter(_metrics(api), "499") - _counter(before, "499") >= 20, timeout_s=30,
             what="20 more requests counted as status 499")
    after = _metrics(api)
    assert _counter(after, "500") == _counter(before, "500")
    log = api["log"].read_text()
    assert "Traceback" not in log and "unexpected error" not in log and "Connection lost" not in log


# ---------------------------------------------------------------------- what /ready and 503s say

def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    return port


def test_ready_and_service_unavailable_name_no_backend_address(stack, tmp_path):
    kafka_port, redis_port = _closed_port(), _closed_port()
    env = server_env(stack, FEATURESTREAM_REDIS_URL=f"redis://:hunter2@127.0.0.1:{redis_port}/0",
                     FEATURESTREAM_KAFKA_BOOTSTRAP=f"127.0.0.1:{kafka_port}")
    proc, url = start_server(env, tmp_path, "--workers", "1")
    secrets = [str(kafka_port), str(redis_port), "127.0.0.1", "redis://", "hunter2", "Error 111"]
    try:
        api = {"url": url, "key": env["AWS_ACCESS_KEY_ID"], "secret": env["AWS_SECRET_ACCESS_KEY"]}
        sm, rt = boto_clients(api)
        code, message, status = error_of(rt.get_record, FeatureGroupName="g", RecordIdentifierValueAsString="1")
        assert (code, status) == ("ServiceUnavailable", 503) and "kafka is unavailable" in message
        assert not [s for s in secrets if s in message], message

        # /ready is unauthenticated and cheap to ask: 12 probes at once share one check per
        # backend, name no address, and add one log line per backend, not one per probe.
        with ThreadPoolExecutor(12) as pool:
            answers = list(pool.map(lambda _: raw_request(api, "GET", "/ready", signed=False), range(12)))
        for status, _, body in answers:
            assert status == 503
            assert json.loads(body) == {"status": "not ready", "kafka": "unavailable", "redis": "unavailable"}
    finally:
        stop_server(proc)
    log = next(tmp_path.glob("serve-*.log")).read_text()
    # the details are in the log, for the operator (the Redis password redacted there too)
    assert str(redis_port) in log and str(kafka_port) in log and "hunter2" not in log
    assert len(re.findall(r"^redis unavailable \(/ready\)", log, re.M)) == 1, log
    assert len(re.findall(r"^kafka unavailable \(/ready\)", log, re.M)) == 1, log


def test_a_client_that_leaves_while_the_server_works_is_counted_499_not_503(stack, tmp_path, unique_name, api):
    # A Redis that accepts connections and never answers: every read waits for its timeout, and
    # the client does not wait that long.
    silent = socket.create_server(("127.0.0.1", 0))
    env = server_env(stack, FEATURESTREAM_REDIS_URL=f"redis://127.0.0.1:{silent.getsockname()[1]}/0")
    proc, url = start_server(env, tmp_path, "--workers", "1")
    working = api  # the module's server, whose Redis answers
    try:
        api = {"url": url, "key": env["AWS_ACCESS_KEY_ID"], "secret": env["AWS_SECRET_ACCESS_KEY"]}
        sm, _ = boto_clients(api)
        group = unique_name("slow")
        _group(sm, group)  # the registry is in Kafka, which answers
        path, query = f"/FeatureGroup/{group}", "RecordIdentifierValueAsString=1"
        host = url.removeprefix("http://")
        headers = sign("GET", path, query, {"Host": host}, b"", access_key=api["key"], secret=api["secret"],
                       region="us-east-1", now=datetime.now(UTC))
        head = f"GET {path}?{query} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
        with _connect(api) as s:
            s.sendall(head.encode())
        # closed at once: the server is still waiting on Redis

        def counted() -> str | None:
            text = _metrics(api)
            return text if 'operation="GetRecord",status="499"} 1.0' in text else None

        text = wait_for(counted, timeout_s=30, what="the GetRecord counted as status 499")
        assert 'operation="GetRecord",status="503"' not in text
        boto_clients(working)[0].delete_feature_group(FeatureGroupName=group)  # deleting wipes Redis
    finally:
        stop_server(proc)
        silent.close()
    log = next(tmp_path.glob("serve-*.log")).read_text()
    assert "Traceback" not in log and "unexpected error" not in log


# ---------------------------------------------------------------------- before the body

MiB = 1024 * 1024


def _answer(s: socket.socket, timeout_s: float) -> tuple[int, dict, bytes] | None:
    """The HTTP answer on ``s`` (status, lower-case headers, body), or None if none came within ``timeout_s``."""
    s.settimeout(timeout_s)
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = dict((k.strip().lower(), v.strip()) for k, _, v in (line.partition(":") for line in lines[1:]))
        while len(body) < int(headers.get("content-length", 0)):
            chunk = s.recv(65536)
            if not chunk:
                break
            body += chunk
    except TimeoutError:
        return None
    return (int(lines[0].split()[1]), headers, body) if data else None


def _head(method: str, path: str, headers: dict) -> bytes:
    return (f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n").encode()


def _interim(s: socket.socket, timeout_s: float) -> bytes:
    """What the server sent before the client sent its body: everything up to the first blank line."""
    s.settimeout(timeout_s)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(1)  # one byte at a time: nothing past the interim answer is read here
        if not chunk:
            break
        data += chunk
    return data


def test_expect_100_continue_is_answered_once_the_header_checks_pass_and_before_the_body(api):
    host = api["url"].removeprefix("http://")
    body = b"{}"
    signed = sign("POST", "/", "", {"Host": host, "Content-Type": "application/x-amz-json-1.1",
                                    "X-Amz-Target": "SageMaker.ListFeatureGroups"}, body,
                  access_key=api["key"], secret=api["secret"], region="us-east-1", now=datetime.now(UTC))
    waiting = {**signed, "Content-Length": str(len(body)), "Expect": "100-continue"}
    with _connect(api) as s:  # the client holds its body back until it is told to send it
        s.sendall(_head("POST", "/", waiting))
        assert _interim(s, 10) == b"HTTP/1.1 100 Continue\r\n\r\n"
        s.sendall(body)
        status, _, answer = _answer(s, 10)
        assert status == 200 and "FeatureGroupSummaries" in json.loads(answer)
    with _connect(api) as s:  # no signature: refused at once, and the body is never asked for
        s.sendall(_head("POST", "/", {"Host": host, "Content-Length": "2", "Expect": "100-continue"}))
        status, headers, answer = _answer(s, 10)
        assert (status, headers.get("x-amzn-errortype")) == (403, "MissingAuthenticationTokenException"), answer
    with _connect(api) as s:  # an expectation this server does not know
        s.sendall(_head("POST", "/", {**waiting, "Expect": "something-else"}))
        status, _, answer = _answer(s, 10)
        assert status == 417 and "only 100-continue" in json.loads(answer)["message"]


def test_signatures_are_checked_and_body_bytes_capped_before_any_body_is_read(stack, tmp_path):
    env = server_env(stack)
    body_timeout = 20
    proc, url = start_server(env, tmp_path, "--workers", "1", "--max-body-in-flight-bytes", str(4 * MiB),
                             "--body-timeout", str(body_timeout), "--regions", "us-east-1,eu-central-1")
    api = {"url": url, "key": env["AWS_ACCESS_KEY_ID"], "secret": env["AWS_SECRET_ACCESS_KEY"]}
    host = url.removeprefix("http://")
    big = {"Host": host, "Content-Type": "application/json", "Content-Length": str(2 * MiB)}

    def signed(**kw) -> dict:
        args = dict(access_key=api["key"], secret=api["secret"], region="us-east-1", now=datetime.now(UTC)) | kw
        return sign("POST", "/BatchWriteRecord", "", big, b"", **args)  # not this body: a forged signature

    try:
        # Refused from the Authorization header alone, at once: the body would take 20 s to time out.
        for headers, code, words in [
            (big, "MissingAuthenticationTokenException", "Missing Authentication Token"),
            (signed(access_key="AKIDNOBODY"), "UnrecognizedClientException", "security token"),
            (signed(region="ap-south-1"), "InvalidSignatureException", "valid region, not 'ap-south-1'"),
            (signed(now=datetime.now(UTC).replace(year=2020)), "InvalidSignatureException", "Signature expired"),
            ({**signed(), "Authorization": "AWS4-HMAC-SHA256 Credential=x"}, "IncompleteSignatureException",
             "requires 'Credential'"),
        ]:
            with _connect(api) as s:
                started = time.monotonic()
                s.sendall(_head("POST", "/BatchWriteRecord", headers) + b"{" * 65536)  # half sent, at most
                got = _answer(s, 10)
            assert got is not None and time.monotonic() - started < 10, (code, "no answer before the body")
            status, got_headers, body = got
            assert (status, got_headers["x-amzn-errortype"]) == (403, code) and words in body.decode(), body

        # 150 clients with a known key and a well-formed header (only the body can disprove the
        # signature), each announcing 2 MiB: the worker receives two bodies at once (4 MiB) and
        # refuses the others before reading them, instead of holding 300 MiB.
        clients = [_connect(api) for _ in range(150)]
        try:
            for s in clients:
                s.sendall(_head("POST", "/BatchWriteRecord", signed()))
            # Which two are admitted is the worker's choice: it need not read the heads in the order
            # they were sent (under load it did not). So every client is waited on at once, 5 s each.
            with ThreadPoolExecutor(max_workers=len(clients)) as pool:
                answers = list(pool.map(lambda s: _answer(s, 5.0), clients))
            admitted = [s for s, got in zip(clients, answers, strict=True) if got is None]
            assert len(admitted) == 2, [got[0] if got else None for got in answers]  # waiting for their bodies
            for status, headers, body in filter(None, answers):
                assert (status, headers["x-amzn-errortype"]) == (503, "ThrottlingException"), body
                assert b"--max-body-in-flight-bytes" in body
            # The admitted bodies arrive; their signatures do not match them, and the bytes are given back.
            for s in admitted:
                s.sendall(b" " * (2 * MiB))
                status, headers, body = _answer(s, 30)
                assert (status, headers["x-amzn-errortype"]) == (403, "InvalidSignatureException"), body
        finally:
            for s in clients:
                s.close()
        sm, _ = boto_clients(api)
        assert "FeatureGroupSummaries" in sm.list_feature_groups(MaxResults=1)
        status, _, _ = raw_request(api, "POST", "/BatchWriteRecord", b" " * (2 * MiB - 16) + b'{"Entries": []}')
        assert status == 400  # a full-size body is received again (and refused only for what it says)
    finally:
        stop_server(proc)


# ---------------------------------------------------------------------- a Redis that stops answering

def _redis_pid(stack) -> int:
    from featurestream.stack import procs
    from featurestream.stack.layout import StackLayout

    record = procs.PidFiles(StackLayout(stack.state_dir).run_dir).read("redis")
    if record is None:
        pytest.skip("the Redis server is not one this session started (FEATURESTREAM_REDIS_URL given)")
    return record.pid


def _bytes_redis_has_not_read_from(pid: int, redis_port: int) -> int:
    """Bytes that process ``pid`` sent to Redis and Redis has not read yet (its sockets' receive
    queues, from /proc/net/tcp): a stopped Redis leaves a command there."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    rows = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as fh:
            for line in fh.readlines()[1:]:
                f = line.split()
                rows.append((int(f[1].rsplit(":", 1)[1], 16), int(f[2].rsplit(":", 1)[1], 16),
                             int(f[4].split(":")[1], 16), f[9]))  # local port, remote port, rx_queue, inode
    ours = {local for local, remote, _, inode in rows if inode in inodes and remote == redis_port}
    return sum(rx for local, remote, rx, _ in rows if local == redis_port and remote in ours)


def test_a_stalled_redis_blocks_neither_probes_nor_the_control_plane_nor_puts(stack, tmp_path, unique_name):
    env = server_env(stack)
    # A long Redis timeout, so that the GetRecord below stays stuck while the rest is asked.
    proc, url = start_server(env, tmp_path, "--workers", "1", "--redis-timeout", "10")
    api = {"url": url, "key": env["AWS_ACCESS_KEY_ID"], "secret": env["AWS_SECRET_ACCESS_KEY"]}
    sm, rt = boto_clients(api)
    group = unique_name("stall")
    _group(sm, group, "age")
    assert rt.get_record(FeatureGroupName=group, RecordIdentifierValueAsString="c1") is not None  # group known
    pid = _redis_pid(stack)
    pool = ThreadPoolExecutor(2)
    os.kill(pid, signal.SIGSTOP)
    try:
        stuck = pool.submit(raw_request, api, "GET", f"/FeatureGroup/{group}",
                            query="RecordIdentifierValueAsString=c1")
        redis_port = int(stack.redis_url.rsplit(":", 1)[1].split("/")[0])
        wait_for(lambda: _bytes_redis_has_not_read_from(proc.pid, redis_port), timeout_s=10,
                 what="the GetRecord's command sent to the stopped Redis")

        def within(seconds: float, call, *args, **kwargs):
            started = time.monotonic()
            result = call(*args, **kwargs)
            elapsed = time.monotonic() - started
            assert elapsed < seconds, f"{getattr(call, '__name__', call)} took {elapsed:.1f} s"
            return result

        assert not stuck.done()
        assert within(2, raw_request, api, "GET", "/health", signed=False)[0] == 200
        assert within(2, sm.describe_feature_group, FeatureGroupName=group)["FeatureGroupName"] == group
        assert within(2, sm.list_feature_groups, NameContains=group)["FeatureGroupSummaries"]
        within(3, rt.put_record, FeatureGroupName=group, Record=_record("c2", age="7"))  # to Kafka
        status, _, body = within(8, raw_request, api, "GET", "/ready", signed=False)  # its Redis check times out at 5 s
        assert status == 503 and json.loads(body)["redis"] == "unavailable" and json.loads(body)["kafka"] == "ok"
        assert not stuck.done(), "the GetRecord was not waiting on Redis after all"
    finally:
        os.kill(pid, signal.SIGCONT)
        pool.shutdown(wait=True)
    try:
        status, _, _ = stuck.result(timeout=30)
        assert status in (200, 503)  # answered once Redis is back (or its read timed out), never a 500
    finally:
        sm.delete_feature_group(FeatureGroupName=group)
        stop_server(proc)


def test_reads_during_a_redis_stall_answer_service_unavailable_within_the_redis_timeout(stack, tmp_path, unique_name):
    """GetRecord and BatchGetRecord read Redis on the event loop (no thread each): when Redis stops
    answering, every read in flight, many more than the server has threads, answers ServiceUnavailable
    within the Redis timeout (1 s, one retry), and reads answer again once Redis is back."""
    env = server_env(stack)
    proc, url = start_server(env, tmp_path, "--workers", "1", "--threads", "1", "--redis-timeout", "1")
    api = {"url": url, "key": env["AWS_ACCESS_KEY_ID"], "secret": env["AWS_SECRET_ACCESS_KEY"]}
    sm, rt = boto_clients(api)
    group = unique_name("redis-stop")
    _group(sm, group, "age")
    get = ("GET", f"/FeatureGroup/{group}", b"", "RecordIdentifierValueAsString=c1")
    batch = ("POST", "/BatchGetRecord", json.dumps({"Identifiers": [
        {"FeatureGroupName": group, "RecordIdentifiersValueAsString": ["c1", "c2"]}]}).encode(), "")
    assert raw_request(api, *get[:3], query=get[3])[0] == 200  # the group is known, Redis answers

    def timed(method: str, path: str, body: bytes, query: str) -> tuple[float, int, bytes]:
        started = time.monotonic()
        status, _, answer = raw_request(api, method, path, body, query=query)
        return time.monotonic() - started, status, answer

    pid = _redis_pid(stack)
    pool = ThreadPoolExecutor(24)
    os.kill(pid, signal.SIGSTOP)
    try:
        answers = [f.result(timeout=60) for f in [pool.submit(timed, *get) for _ in range(20)]
                   + [pool.submit(timed, *batch) for _ in range(4)]]
    finally:
        os.kill(pid, signal.SIGCONT)
        pool.shutdown(wait=True)
    try:
        for seconds, status, answer in answers:
            body = json.loads(answer)
            assert status == 503 and body["__type"] == "ServiceUnavailable", (status, body)
            assert "redis is unavailable" in body["message"], body
            # 1 s read timeout, a 50-200 ms backoff, 1 s again; a thread per read would queue them 2 s apart
            assert seconds < 6, f"a read answered after {seconds:.1f} s with a 1 s Redis timeout"
        wait_for(lambda: raw_request(api, *get[:3], query=get[3])[0] == 200, timeout_s=20,
                 what="GetRecord to answer once Redis runs again")
        status, _, answer = raw_request(api, *batch[:3])
        assert status == 200 and json.loads(answer) == {"Records": [], "Errors": [], "UnprocessedIdentifiers": []}
    finally:
        sm.delete_feature_group(FeatureGroupName=group)
        stop_server(proc)


def test_a_flood_of_ready_probes_during_a_redis_stall_leaves_the_control_plane_its_threads(stack, tmp_path,
                                                                                           unique_name):
    """One request thread (--threads 1) and a Redis read timeout longer than the test's deadlines: were
    /ready's Redis check run on the request threads, the control-plane call below would wait for it."""
    env = server_env(stack)
    proc, url = start_server(env, tmp_path, "--workers", "1", "--threads", "1", "--redis-timeout", "30")
    api = {"url": url, "key": env["AWS_ACCESS_KEY_ID"], "secret": env["AWS_SECRET_ACCESS_KEY"]}
    sm, _ = boto_clients(api)
    group = unique_name("probes")
    _group(sm, group, "age")
    pid = _redis_pid(stack)
    redis_port = int(stack.redis_url.rsplit(":", 1)[1].split("/")[0])
    pool = ThreadPoolExecutor(40)
    try:
        os.kill(pid, signal.SIGSTOP)
        try:
            probes = [pool.submit(raw_request, api, "GET", "/ready", signed=False) for _ in range(40)]
            wait_for(lambda: _bytes_redis_has_not_read_from(proc.pid, redis_port), timeout_s=10,
                     what="/ready's PING sent to the stopped Redis")
            started = time.monotonic()
            described = sm.describe_feature_group(FeatureGroupName=group)
            elapsed = time.monotonic() - started
            assert described["FeatureGroupName"] == group
            assert elapsed < 3, f"DescribeFeatureGroup took {elapsed:.1f} s behind the /ready probes"
            assert not all(p.done() for p in probes), "the probes were not waiting on Redis after all"
            answers = [p.result(timeout=30) for p in probes]
            for status, _, body in answers:
                assert status == 503 and json.loads(body) == {"status": "not ready", "kafka": "ok",
                                                              "redis": "unavailable"}, body
        finally:
            os.kill(pid, signal.SIGCONT)
            pool.shutdown(wait=True)
        wait_for(lambda: raw_request(api, "GET", "/ready", signed=False)[0] == 200, timeout_s=60,
                 what="/ready to answer 200 once Redis runs again")
        sm.delete_feature_group(FeatureGroupName=group)
    finally:
        stop_server(proc)


# ---------------------------------------------------------------------- what the wire gets back

def test_compressed_and_unsigned_bodies_and_malformed_requests_get_aws_errors_and_no_server_header(api):
    log_before = api["log"].read_text()
    seen: list[tuple[int, dict, bytes]] = []

    def expect(got, status: int, code: str, words: str) -> None:
        seen.append(got)
        assert got is not None, (code, "no answer")
        got_status, headers, body = got
        headers = {k.lower(): v for k, v in headers.items()}
        answer = json.loads(body)
        assert (got_status, headers.get("x-amzn-errortype"), answer["__type"]) == (status, code, code), body
        assert words in answer["message"], answer

    record = json.dumps({"Record": _record("c1")}).encode()
    for encoding, packed in (("gzip", gzip.compress(record)), ("deflate", zlib.compress(record)),
                             ("br", b"\x0b\x02\x80" + record)):  # the SDKs never compress a request
        expect(raw_request(api, "PUT", "/FeatureGroup/anything", packed,
                           headers={"Content-Encoding": encoding, "Content-Type": "application/json"}),
               400, "ValidationError", f"Content-Encoding '{encoding}' is not accepted")

    host = api["url"].removeprefix("http://")
    unsigned = sign("PUT", "/FeatureGroup/anything", "", {"Host": host}, record, access_key=api["key"],
                    secret=api["secret"], region="us-east-1", now=datetime.now(UTC), unsigned_payload=True)
    expect(raw_request(api, "PUT", "/FeatureGroup/anything", record, headers=unsigned, signed=False),
           400, "IncompleteSignatureException", "x-amz-content-sha256: UNSIGNED-PAYLOAD is not accepted")

    # aiohttp's own refusals, before any handler of ours runs, in the same shape.
    forged = sign("POST", "/BatchWriteRecord", "", {"Host": host, "Transfer-Encoding": "chunked"}, b"",
                  access_key=api["key"], secret=api["secret"], region="us-east-1", now=datetime.now(UTC))
    for raw, status, words in [
        (b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n", 400, "LineTooLong"),
        (b"GET /health HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(200)) + b"\r\n",
         400, "Too many headers"),
        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: twelve\r\n\r\n", 400, "Content-Length"),
        (b"GET /health HTTP/1.1 and more\r\nHost: x\r\n\r\n", 400, "HTTP request is malformed"),
        (_head("POST", "/BatchWriteRecord", forged) + b"zz\r\n{}\r\n0\r\n\r\n", 400, "chunk size"),
    ]:
        with _connect(api) as s:
            s.sendall(raw)
            expect(_answer(s, 10), status, "ValidationError", words)

    ok = [raw_request(api, "GET", "/health", signed=False), raw_request(api, "GET", "/ready", signed=False),
          raw_request(api, "POST", "/", b"{}", headers={"X-Amz-Target": "SageMaker.ListFeatureGroups",
                                                     "Content-Type": "application/x-amz-json-1.1"})]
    assert [status for status, _, _ in ok] == [200, 200, 200]
    assert [h for _, h, _ in ok + seen if "server" in {k.lower() for k in h}] == []  # no software, no version
    new_log = api["log"].read_text()[len(log_before):]
    assert "Traceback" not in new_log and "Error handling request" not in new_log, new_log[-3000:]
