"""Running `featurestream serve` as a subprocess for tests, and talking to it with boto3 or raw requests."""

from __future__ import annotations

import subprocess
import sys
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import boto3
import pytest
from botocore.config import Config as BotoConfig
from botocore.exceptions import ClientError

from featurestream.http.sigv4 import sign
from featurestream.stack.ports import free_port
from tests.integration.procs import stack_env
from tests.support.wait import wait_for


def server_env(stack, **overrides) -> dict:
    env = stack_env(stack)
    if not stack.aws_access_key_id:  # the server needs a key pair to verify signatures against
        env.update({"AWS_ACCESS_KEY_ID": "featurestream", "AWS_SECRET_ACCESS_KEY": "featurestream-local-secret"})
    env.update(overrides)
    return env


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/health", timeout=1) as resp:
            return resp.status == 200
    except (OSError, urllib.error.URLError):
        return False


def start_server(env: dict, tmp_path: Path, *extra: str) -> tuple[subprocess.Popen, str]:
    """`featurestream serve` on a free port, its output in ``tmp_path/serve-<port>.log``; returns once healthy."""
    port = free_port()
    log = open(tmp_path / f"serve-{port}.log", "wb")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen([sys.executable, "-m", "featurestream.cli", "serve", "--port", str(port), *extra],
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"serve exited with {proc.returncode}: {(tmp_path / f'serve-{port}.log').read_text()}")
        return healthy(url)

    wait_for(up, timeout_s=30, what=f"featurestream serve on {url}")
    return proc, url


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


def boto_clients(api: dict, *, key: str | None = None, secret: str | None = None):
    """(sagemaker, sagemaker-featurestore-runtime) boto3 clients on ``api["url"]``, no retries."""
    kw = dict(endpoint_url=api["url"], region_name="us-east-1", aws_access_key_id=key or api["key"],
              aws_secret_access_key=secret or api["secret"],
              config=BotoConfig(retries={"total_max_attempts": 1, "mode": "standard"}))
    return boto3.client("sagemaker", **kw), boto3.client("sagemaker-featurestore-runtime", **kw)


def athena_client(api: dict, *, key: str | None = None, secret: str | None = None):
    """A boto3 Athena client on ``api["url"]``, no retries."""
    return boto3.client("athena", endpoint_url=api["url"], region_name="us-east-1",
                        aws_access_key_id=key or api["key"], aws_secret_access_key=secret or api["secret"],
                        config=BotoConfig(retries={"total_max_attempts": 1, "mode": "standard"}))


def error_of(call, *args, **kwargs) -> tuple[str, str, int]:
    """(code, message, HTTP status) of the ClientError ``call`` must raise."""
    with pytest.raises(ClientError) as info:
        call(*args, **kwargs)
    err = info.value.response
    return err["Error"]["Code"], err["Error"]["Message"], err["ResponseMetadata"]["HTTPStatusCode"]


def raw_request(api: dict, method: str, path: str, body: bytes = b"", query: str = "", headers: dict | None = None,
                signed: bool = True, when: datetime | None = None) -> tuple[int, dict, bytes]:
    """One request signed as the SDKs sign (unless ``signed`` is False); (status, headers, body)."""
    host = api["url"].removeprefix("http://")
    hdrs = {"Host": host, **(headers or {})}
    if signed:
        hdrs = sign(method, path, query, hdrs, body, access_key=api["key"], secret=api["secret"],
                    region="us-east-1", now=when or datetime.now(UTC))
    req = urllib.request.Request(api["url"] + path + ("?" + query if query else ""), data=body or None,
                                 method=method, headers=hdrs)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def athena_rest(api: dict, method: str, path: str, query: str = "", body: dict | None = None,
                ) -> tuple[int, dict, dict]:
    """One request in Athena's REST-JSON binding (botocore 1.44 and later), signed by botocore's own SigV4
    signer for the ``athena`` service as those SDKs sign it; (status, headers, JSON body)."""
    import orjson
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    data = orjson.dumps(body) if body is not None else b""
    request = AWSRequest(method=method, url=api["url"] + path + ("?" + query if query else ""), data=data,
                         headers={"Content-Type": "application/json"} if body is not None else {})
    SigV4Auth(Credentials(api["key"], api["secret"]), "athena", "us-east-1").add_auth(request)
    prepared = request.prepare()
    req = urllib.request.Request(prepared.url, data=data or None, method=method, headers=dict(prepared.headers))
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, dict(resp.headers), orjson.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), orjson.loads(exc.read() or b"{}")


def wire_record(record: dict) -> list[dict]:
    """A record in SageMaker's wire form: every value as text (a float by its shortest exact repr),
    collections as ValueAsStringList."""
    def text(value) -> str:
        return repr(value) if isinstance(value, float) else str(value)

    out = []
    for name, value in record.items():
        if isinstance(value, list):
            out.append({"FeatureName": name, "ValueAsStringList": [text(v) for v in value]})
        else:
            out.append({"FeatureName": name, "ValueAsString": text(value)})
    return out
