"""The server's one handler: it bounds, authenticates, authorizes, routes and answers every request.

Order matters for safety: the Authorization header is checked (form, known key, date, scope,
region) before the body is read; the body is bounded (in size, in time, and in bytes held by the
worker at once) and must not be compressed; the signature is checked before the body is parsed,
the key's permissions before any group is looked up, and names are validated before anything
touches Kafka, Redis or S3. Every failure becomes the error an AWS SDK expects (see ``errors.py``),
never a traceback to the client; an InternalFailure is logged once, at ERROR, with its traceback.
A client that leaves mid-request is counted as ``status="499"`` and logged at debug level only,
since nothing failed on our side.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
import uuid
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, unquote

import orjson
from prometheus_client import CONTENT_TYPE_LATEST

from featurestream.http import athena, athena_rest, control
from featurestream.http.authorize import authorize, readable
from featurestream.http.body import ClientClosed, refuse_encoded
from featurestream.http.body_budget import BodyBudget
from featurestream.http.credentials import AccessKey
from featurestream.http.doors import Doors
from featurestream.http.errors import CONTROL, INTERNAL_FAILURE, RUNTIME, ApiError, backend_of, from_exception
from featurestream.http.incoming import Answer, Incoming
from featurestream.http.limits import Limits
from featurestream.http.metrics import CLIENT_CLOSED, HttpMetrics
from featurestream.http.permissions import Permissions
from featurestream.http.quiet_log import log_unavailable
from featurestream.http.readiness import Readiness
from featurestream.http.records import group_arn, group_name
from featurestream.http.runtime import RuntimeApi
from featurestream.http.sigv4 import AuthError, Credential, SignedRequest, check_header, verify_signature
from featurestream.sdk import FeatureStore
from schemas.errors import ServiceUnavailableError
from sinks.online.connect import redact_url

log = logging.getLogger("featurestream.http")
MAX_QUERY_FIELDS = 200
DEFAULT_REGION = "us-east-1"
_OPEN_PATHS = ("/health", "/ready", "/metrics")
_JSON = "application/x-amz-json-1.1"
_RECORD_OPERATIONS = {"GET": "GetRecord", "PUT": "PutRecord", "DELETE": "DeleteRecord"}
# A client's body that was not read to its end cannot be told from its next request; aiohttp
# reads and drops it this long before closing, so the client can still read our error answer.
LINGERING_S = 2.0
# aiohttp's request-handler options for the connections the fast lane hands to aiohttp (listen.run):
# auto_decompress off, so a compressed body is refused (refuse_encoded), never inflated, not even while
# aiohttp reads and drops the rest of a refused body; no access log (the metrics count every request).
HANDLER_OPTIONS = {"max_field_size": 16384, "lingering_time": LINGERING_S, "auto_decompress": False,
                   "access_log": None}


class RequestIds:
    """``x-amzn-RequestId`` values in the UUID form the reference answers with: a random stem drawn once
    per process and a counter. ``uuid.uuid4()`` per request read 16 bytes from the kernel each time,
    ~2 % of a worker's time under load; these are as unique within a process and across processes
    (each draws its own stem)."""

    def __init__(self) -> None:
        self._stem = str(uuid.uuid4())[:24]  # 'xxxxxxxx-xxxx-4xxx-yxxx-': the version and variant stay
        self._count = itertools.count()

    def new(self) -> str:
        return f"{self._stem}{next(self._count) % (1 << 48):012x}"


class Server:
    """State shared by the requests of one worker process."""

    def __init__(self, store: FeatureStore, *, credentials: Mapping[str, AccessKey] | None,
                 limits: Limits | None = None, threads: int = 32, metrics: HttpMetrics | None = None,
                 regions: frozenset[str] | None = None) -> None:
        self.store = store
        self.credentials = credentials  # None: authentication switched off (--no-auth)
        self.regions = regions  # the regions a request may be signed for; None: any
        self.limits = limits or Limits()
        self.budget = BodyBudget(self.limits.max_body_in_flight_bytes)
        self.executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="featurestream-http")
        # /ready's checks too, one thread per backend (readiness runs one check per backend at a time):
        # probes during an outage hold these two, never a thread a request needs.
        self.probes = ThreadPoolExecutor(max_workers=2, thread_name_prefix="featurestream-http-ready")
        self.groups = store.groups
        # GetRecord and BatchGetRecord read Redis on the event loop (asyncio client): a Redis that stops
        # answering holds no thread the control plane, the registry and /ready need.
        self.runtime = RuntimeApi(store, self.groups, self.executor,
                                  max_response_bytes=self.limits.max_response_bytes)
        self.metrics = metrics or HttpMetrics()
        self._request_ids = RequestIds()  # built in each worker process, after the fork
        self.doors = Doors(store, self.executor, self.runtime, self._run)  # Athena, ListRecords/UpdateRecord, update and delete status (doors.py)
        config = store.config
        self.readiness = Readiness(
            {"kafka": (self.check_kafka, f"Kafka at {config.kafka_bootstrap}"),
             "redis": (self.check_redis, f"Redis at {redact_url(config.redis_url or '')}")}, self._probe)

    async def aclose(self) -> None:
        """After the last connection: the online reader's connections, then the threads and clients."""
        await self.runtime.aclose()
        self.close()

    def close(self) -> None:
        self.doors.close()
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.probes.shutdown(wait=False, cancel_futures=True)
        self.store.close()

    # ------------------------------------------------------------------ entry
    async def answer(self, request: Incoming) -> Answer:
        """Every request's answer, whichever lane read it (``listen.run``; aiohttp's through
        ``incoming.aiohttp_handler``); bodies are bounded by ``self.limits.max_body_bytes``, the lanes'
        ``client_max_size``."""
        started = time.perf_counter()
        method = request.method
        path, _, query = request.raw_path.partition("?")
        if path in _OPEN_PATHS and method == "GET":
            return await self._open_endpoint(path)
        target = request.header("X-Amz-Target")
        operation = operation_of(method, path, target)
        # Athena's REST binding answers errors as its JSON 1.1 binding does (AccessDeniedException, ...).
        protocol = CONTROL if target is not None or operation in athena.OPERATIONS else RUNTIME
        content_type = _JSON if target is not None else "application/json"
        request_id = self._request_ids.new()
        reservation = None
        try:
            headers = request.header_pairs()
            credential = self._check_header(headers, query)  # before a byte of the body is read
            refuse_encoded(request.header("Content-Encoding"))
            size = request.declared_size(self.limits)
            # A body over --max-body-bytes reserves nothing: the body read refuses it (413) unread.
            reservation = self.budget.reserve(size if size <= self.limits.max_body_bytes else 0)
            body = await request.body(self.limits)
            region, permissions = self._verify(method, path, query, headers, body, credential)
            result = await self._dispatch(operation, method, path, query, target, body, region, permissions)
            status, body, extra = 200, orjson.dumps(result), ()
        except ClientClosed as exc:
            return self._client_closed(method, path, operation, started, str(exc))
        except AuthError as exc:
            status, body, extra = self._error(protocol, ApiError(exc.code, str(exc), exc.status))
        except Exception as exc:  # never a traceback to the client; the log keeps it
            status, body, extra = self._error(protocol, self._failure(exc, method, path, operation, request_id))
        finally:
            if reservation is not None:
                reservation.release()
        if request.gone():  # it left while we worked: nobody reads this answer
            return self._client_closed(method, path, operation, started, "closed before the answer")
        self.metrics.observe(operation, status, time.perf_counter() - started)
        # After a 408 the connection is closed: the rest of that body would be read as the next request.
        return Answer(status, body, content_type, (*extra, ("x-amzn-RequestId", request_id)), status == 408)

    def _client_closed(self, method: str, path: str, operation: str, started: float, why: str) -> Answer:
        log.debug("client closed the connection during %s %s (%s)", method, path[:200], why)
        self.metrics.observe(operation, CLIENT_CLOSED, time.perf_counter() - started)
        return Answer(400, b"", "application/json", close=True)  # written nowhere: the connection is closed

    @staticmethod
    def _error(protocol: str, err: ApiError) -> tuple[int, bytes, tuple[tuple[str, str], ...]]:
        return err.status, err.body(protocol), (("x-amzn-ErrorType", err.code_for(protocol)),)

    def _failure(self, exc: Exception, method: str, path: str, operation: str, request_id: str) -> ApiError:
        """The answer to a request that raised ``exc``. A backend that is down is logged quietly
        (once per cause and period); anything answered InternalFailure is logged here, once, at
        ERROR with its traceback and the request id the client was given."""
        if isinstance(exc, ServiceUnavailableError):
            log_unavailable(backend_of(exc), exc, operation)
        err = from_exception(exc)
        if err.code != INTERNAL_FAILURE:
            return err
        log.error("InternalFailure in %s %s (%s, request %s): %s: %s", method, path[:200], operation, request_id,
                  type(exc).__name__, str(exc)[:1000], exc_info=exc)
        return ApiError(INTERNAL_FAILURE, f"{err} (request {request_id})", err.status)

    def _check_header(self, headers: list[tuple[str, str]], query: str) -> Credential | None:
        """The Authorization header's cheap checks (None when authentication is off); AuthError."""
        if self.credentials is None:
            return None
        return check_header(headers, query, self._secret_of, datetime.now(UTC), regions=self.regions)

    def _verify(self, method: str, path: str, query: str, headers: list[tuple[str, str]], body: bytes,
                credential: Credential | None) -> tuple[str, Permissions]:
        """The signature over the body: the region signed for and what the signing key may do."""
        if self.credentials is None or credential is None:
            return DEFAULT_REGION, Permissions.everything()
        verified = verify_signature(SignedRequest(method, path, query, headers, body), credential)
        return verified.region, self.credentials[verified.access_key].permissions

    def _secret_of(self, access_key: str) -> str | None:
        assert self.credentials is not None
        known = self.credentials.get(access_key)
        return None if known is None else known.secret

    # ------------------------------------------------------------------ routing
    async def _dispatch(self, operation: str, method: str, path: str, query: str, target: str | None,
                        body: bytes, region: str, permissions: Permissions) -> dict[str, Any]:
        if target is not None:
            if method != "POST" or path != "/":
                raise ApiError("UnknownOperationException", f"{target[:80]} must be sent as POST /", 404)
            if target.startswith("AmazonAthena."):
                return await self.doors.athena(operation, target, _json_object(body), permissions)
            if operation not in control.OPERATIONS:
                raise ApiError("UnknownOperationException",
                               f"operation {target[:80]!r} is not supported; featurestream serves "
                               f"{', '.join('SageMaker.' + o for o in control.OPERATIONS)}", 400)
            payload = _json_object(body)
            name = None if operation == "ListFeatureGroups" else _named_group(payload)
            authorize(permissions, operation, name, payload)
            return await self._run(self._control, operation, payload, region, permissions)
        if operation in ("GetRecord", "PutRecord", "DeleteRecord"):
            name = group_name(unquote(path.split("/")[2], errors="replace"))
            authorize(permissions, operation, name, {})
            if operation == "GetRecord":
                return await self.runtime.get_record(name, _query(query))
            if operation == "PutRecord":
                return await self.runtime.put_record(name, _json_object(body))
            return await self.runtime.delete_record(name, _query(query))
        if operation in athena.OPERATIONS:  # Athena's REST binding (botocore 1.44 and later): athena_rest.py
            payload = athena_rest.request_input(operation, path, _query(query), _json_object(body))
            return await self.doors.athena(operation, f"AmazonAthena.{operation}", payload, permissions)
        if operation in ("ListRecords", "UpdateRecord"):
            name = group_name(unquote(path.split("/")[2], errors="replace"))
            authorize(permissions, operation, name, {})
            return await self.doors.records(operation, name, _json_object(body))
        if operation in ("BatchGetRecord", "BatchWriteRecord"):
            payload = _json_object(body)
            authorize(permissions, operation, None, payload)
            if operation == "BatchGetRecord":
                return await self.runtime.batch_get_record(payload)
            return await self.runtime.batch_write_record(payload)
        raise ApiError("UnknownOperationException",
                       f"no operation at {method} {path[:100]}; featurestream serves PutRecord, GetRecord, "
                       "DeleteRecord (/FeatureGroup/<name>), BatchGetRecord, BatchWriteRecord, the "
                       "SageMaker feature-group operations and Athena's (POST / with X-Amz-Target), and "
                       f"Athena's at /{athena_rest.ROOT}", 404)

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def _probe(self, fn: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.probes, fn)

    def _control(self, op: str, body: dict[str, Any], region: str, permissions: Permissions) -> dict[str, Any]:
        registry = self.store.registry
        if op == "CreateFeatureGroup":
            group = registry.create(control.group_from_create(body))
            self.groups.forget(group.name)
            return {"FeatureGroupArn": group_arn(group.name, region)}
        if op == "ListFeatureGroups":
            # Only the groups this key may read, before paging: its pages and tokens are its own.
            visible = [g for g in registry.list() if readable(permissions, g.name)]
            return control.list_page(visible, body, region)
        name = group_name(body.get("FeatureGroupName"))
        if op == "DescribeFeatureGroup":
            return self.doors.lifecycle.describe_by_name(registry, name, region)
        if op == "UpdateFeatureGroup":
            self.doors.lifecycle.update(name, control.update_args(body))
            return {"FeatureGroupArn": group_arn(name, region)}
        # DeleteFeatureGroup: like the reference, online data goes with the group; offline files stay.
        # It answers at once; the group shows Deleting until the delete is done (lifecycle.py).
        self.doors.lifecycle.delete(name)
        return {}

    # ------------------------------------------------------------------ open endpoints
    async def _open_endpoint(self, path: str) -> Answer:
        if path == "/health":
            return _json_answer({"status": "ok"})
        if path == "/metrics":
            return Answer(200, self.metrics.exposition(), CONTENT_TYPE_LATEST)
        status, body = await self.readiness.answer()
        return _json_answer(body, status)

    def check_kafka(self) -> None:
        self.store.registry.refresh()

    def check_redis(self) -> None:
        self.store.online.client.ping()


def operation_of(method: str, path: str, target: str | None) -> str:
    """The operation a request asks for, from its method, path and X-Amz-Target ("Unknown" if none):
    known before the request is read, so metrics and logs name it whatever happens next."""
    if target is not None:
        service, _, op = target.partition(".")
        if service == "AmazonAthena":
            return op if op in athena.OPERATIONS else "Unknown"
        return op if service == "SageMaker" and op in control.OPERATIONS else "Unknown"
    rest = athena_rest.operation_of(method, path)
    if rest is not None:
        return rest
    parts = path.split("/")
    if len(parts) == 3 and parts[1] == "FeatureGroup":
        return _RECORD_OPERATIONS.get(method, "Unknown")
    if len(parts) == 4 and parts[1] == "FeatureGroup" and method == "POST":
        return {"ListRecords": "ListRecords", "Record": "UpdateRecord"}.get(parts[3], "Unknown")
    if method == "POST" and path in ("/BatchGetRecord", "/BatchWriteRecord"):
        return path[1:]
    return "Unknown"


def _named_group(payload: dict[str, Any]) -> str:
    """The FeatureGroupName of a control-plane request (a name or an ARN), validated."""
    value = payload.get("FeatureGroupName")
    if value is None:
        raise ApiError.validation("1 validation error detected: Value null at 'FeatureGroupName' failed to satisfy "
                                  "constraint: Member must not be null")
    return group_name(value)


def _json_answer(value: dict[str, Any], status: int = 200) -> Answer:
    """/health's and /ready's answer, byte for byte what ``web.json_response`` gave (probes may match it)."""
    return Answer(status, json.dumps(value).encode(), "application/json; charset=utf-8")


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
