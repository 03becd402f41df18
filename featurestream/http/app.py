"""The aiohttp application: one handler that bounds, authenticates, routes and answers.

Order matters for safety: the body is bounded before it is read, the signature is checked
before it is parsed, and names are validated before anything touches Kafka, Redis or S3.
Every failure becomes the error an AWS SDK expects (see ``errors.py``), never a traceback.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, unquote

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from featurestream.http import control
from featurestream.http.errors import CONTROL, RUNTIME, ApiError, from_exception
from featurestream.http.metrics import HttpMetrics
from featurestream.http.records import group_arn, group_name
from featurestream.http.runtime import RuntimeApi
from featurestream.http.sigv4 import AuthError, SignedRequest, verify
from featurestream.sdk import FeatureStore
from schemas.errors import FeatureStoreError

log = logging.getLogger("featurestream.http")
MAX_BODY_BYTES = 2 * 1024 * 1024  # > a 350 KB record times BatchWriteRecord's 25... in text form, bounded
MAX_QUERY_FIELDS = 200
DEFAULT_REGION = "us-east-1"
_OPEN_PATHS = ("/health", "/ready", "/metrics")
_JSON = "application/x-amz-json-1.1"


class Server:
    """State shared by the requests of one worker process."""

    def __init__(self, store: FeatureStore, *, credentials: dict[str, str] | None, max_body: int = MAX_BODY_BYTES,
                 threads: int = 32, metrics: HttpMetrics | None = None) -> None:
        self.store = store
        self.credentials = credentials  # None: authentication switched off (--no-auth)
        self.max_body = max_body
        self.executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="featurestream-http")
        self.groups = store.groups
        self.runtime = RuntimeApi(store, self.groups, self.executor)
        self.metrics = metrics or HttpMetrics()

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.store.close()

    # ------------------------------------------------------------------ entry
    async def handle(self, request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        path, _, query = request.raw_path.partition("?")
        if path in _OPEN_PATHS and request.method == "GET":
            return await self._open_endpoint(path)
        target = request.headers.get("X-Amz-Target")
        protocol = CONTROL if target is not None else RUNTIME
        operation = "Unknown"
        try:
            body = await self._read_body(request)
            region = self._authenticate(request, path, query, body)
            operation, result = await self._dispatch(request.method, path, query, target, body, region)
            response = web.Response(body=orjson.dumps(result), status=200,
                                    content_type="application/json" if protocol == RUNTIME else _JSON)
        except AuthError as exc:
            response = self._error(protocol, ApiError(exc.code, str(exc), exc.status))
        except (ApiError, FeatureStoreError) as exc:
            response = self._error(protocol, from_exception(exc))
        except Exception as exc:  # never a traceback to the client; the log keeps it
            log.exception("unexpected error in %s %s", request.method, path[:200])
            response = self._error(protocol, from_exception(exc))
        self.metrics.observe(operation, response.status, time.perf_counter() - started)
        return response

    def _error(self, protocol: str, err: ApiError) -> web.Response:
        code = err.code_for(protocol)
        return web.Response(body=err.body(protocol), status=err.status, headers={"x-amzn-ErrorType": code},
                            content_type="application/json" if protocol == RUNTIME else _JSON)

    async def _read_body(self, request: web.Request) -> bytes:
        length = request.content_length
        if length is not None and length > self.max_body:
            raise ApiError(None, f"request body is {length} bytes; at most {self.max_body} are accepted", 413)
        try:
            return await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise ApiError(None, f"request body is larger than {self.max_body} bytes", 413) from None

    def _authenticate(self, request: web.Request, path: str, query: str, body: bytes) -> str:
        if self.credentials is None:
            return DEFAULT_REGION
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.raw_headers]
        signed = SignedRequest(request.method, path, query, headers, body)
        return verify(signed, self.credentials, datetime.now(UTC)).region

    # ------------------------------------------------------------------ routing
    async def _dispatch(self, method: str, path: str, query: str, target: str | None, body: bytes,
                        region: str) -> tuple[str, dict[str, Any]]:
        if target is not None:
            if method != "POST" or path != "/":
                raise ApiError("UnknownOperationException", f"{target[:80]} must be sent as POST /", 404)
            service, _, op = target.partition(".")
            if service != "SageMaker" or op not in control.OPERATIONS:
                raise ApiError("UnknownOperationException",
                               f"operation {target[:80]!r} is not supported; featurestream serves "
                               f"{', '.join('SageMaker.' + o for o in control.OPERATIONS)}", 400)
            return op, await self._run(self._control, op, _json_object(body), region)
        parts = path.split("/")
        if len(parts) == 3 and parts[1] == "FeatureGroup":
            name = group_name(unquote(parts[2], errors="replace"))
            if method == "GET":
                return "GetRecord", await self.runtime.get_record(name, _query(query))
            if method == "PUT":
                return "PutRecord", await self.runtime.put_record(name, _json_object(body))
            if method == "DELETE":
                return "DeleteRecord", await self.runtime.delete_record(name, _query(query))
        elif path == "/BatchGetRecord" and method == "POST":
            return "BatchGetRecord", await self.runtime.batch_get_record(_json_object(body))
        elif path == "/BatchWriteRecord" and method == "POST":
            return "BatchWriteRecord", await self.runtime.batch_write_record(_json_object(body))
        raise ApiError("UnknownOperationException",
                       f"no operation at {method} {path[:100]}; featurestream serves PutRecord, GetRecord, "
                       "DeleteRecord (/FeatureGroup/<name>), BatchGetRecord, BatchWriteRecord and the "
                       "SageMaker feature-group operations (POST / with X-Amz-Target)", 404)

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    def _control(self, op: str, body: dict[str, Any], region: str) -> dict[str, Any]:
        registry = self.store.registry
        if op == "CreateFeatureGroup":
            group = registry.create(control.group_from_create(body))
            self.groups.forget(group.name)
            return {"FeatureGroupArn": group_arn(group.name, region)}
        if op == "ListFeatureGroups":
            return control.list_page(registry.list(), body, region)
        name = group_name(body.get("FeatureGroupName"))
        if op == "DescribeFeatureGroup":
            return control.describe(registry.describe(name), region)
        if op == "UpdateFeatureGroup":
            args = control.update_args(body)
            registry.describe(name)  # ResourceNotFound before "nothing to change"
            if args:
                registry.update(name, **args)
            self.groups.forget(name)
            return {"FeatureGroupArn": group_arn(name, region)}
        # DeleteFeatureGroup: like the reference, online data goes with the group; offline files stay.
        registry.delete(name, on_purge=self._wipe_online)
        self.groups.forget(name)
        return {}

    def _wipe_online(self, group: Any) -> None:
        if group.online_enabled:
            self.store.online.wipe_group(group)

    # ------------------------------------------------------------------ open endpoints
    async def _open_endpoint(self, path: str) -> web.Response:
        if path == "/health":
            return web.json_response({"status": "ok"})
        if path == "/metrics":
            return web.Response(body=self.metrics.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST})
        checks = {"kafka": self.check_kafka, "redis": self.check_redis}
        results: dict[str, str] = {}
        for name, check in checks.items():
            try:
                await asyncio.wait_for(self._run(check), timeout=5.0)
                results[name] = "ok"
            except Exception as exc:
                results[name] = f"unavailable: {str(exc)[:300] or type(exc).__name__}"
        ok = all(v == "ok" for v in results.values())
        return web.json_response({"status": "ready" if ok else "not ready", **results}, status=200 if ok else 503)

    def check_kafka(self) -> None:
        self.store.registry.refresh()

    def check_redis(self) -> None:
        self.store.online.client.ping()


def _json_object(body: bytes) -> dict[str, Any]:
    if not body:
        return {}
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ApiError.validation(f"the request body is not valid JSON ({exc}); send a JSON object") from None
    if not isinstance(value, dict):
        raise ApiError.validation(f"the request body must be a JSON object; got a {type(value).__name__}")
    return value


def _query(query: str) -> dict[str, list[str]]:
    try:
        return parse_qs(query, keep_blank_values=True, strict_parsing=False, max_num_fields=MAX_QUERY_FIELDS,
                        errors="strict")
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError.validation(f"the query string is malformed: {exc}") from None


def build_app(server: Server) -> web.Application:
    """The aiohttp application around ``server``; ``client_max_size`` bounds chunked bodies too."""
    app = web.Application(client_max_size=server.max_body, handler_args={"max_field_size": 16384})
    app.router.add_route("*", "/{tail:.*}", server.handle)

    async def _close(_app: web.Application) -> None:
        server.close()

    app.on_cleanup.append(_close)
    return app
