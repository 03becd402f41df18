"""The Athena-compatible API: Athena's query operations over the groups' offline tables.

Another front door of `featurestream serve` (JSON 1.1, ``X-Amz-Target: AmazonAthena.<Operation>``, and
the REST-JSON binding of botocore 1.44 and later, ``athena_rest.py``; SigV4 scoped to ``athena``), so that
``athena_query()`` in the SageMaker SDKs and boto3's ``athena`` client work unchanged with
``AWS_ENDPOINT_URL_ATHENA`` set to the server:
- StartQueryExecution checks the SQL (``athena_sql.py``: Trino's dialect translated to DuckDB's;
  what is not translated is an ``InvalidRequestException``), records the execution
  (``athena_state.py``, in Redis, so every worker sees it) and runs it on a small pool of its own.
  It answers once the query is done or after :data:`START_WAIT_S`: the SageMaker SDKs poll
  GetQueryExecution at once and then every 5 s, so a query finished by the first poll saves 5 s.
- A query reads ``[awsdatacatalog.]<database>.<table>``: the DataCatalogConfig names a group's
  DescribeFeatureGroup reports (``data_catalog.py``), shown as Athena shows SageMaker's tables
  (``athena_table.py``), read at one Iceberg snapshot through featurestream's offline query engine.
- The result is written as Athena writes it, CSV at ``<OutputLocation>/<QueryExecutionId>.csv`` on
  the S3 server (``athena_results.py``); GetQueryResults pages that file.
- A query that fails (unknown table, unknown column, a key that may not read the group, S3
  refusing the output) ends FAILED with the reason, as in Athena.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson

from featurestream.http import athena_results, athena_sql, data_catalog
from featurestream.http.athena_state import ACTIVE, Executions
from featurestream.http.athena_table import TableShapeError, view_sql
from featurestream.http.errors import ApiError
from featurestream.http.permissions import Action, Permissions
from schemas.errors import FeatureStoreError
from sinks.offline.fs import STORAGE_EXCEPTIONS, open_filesystem
from sinks.offline.query_source import quote_ident

log = logging.getLogger("featurestream.http.athena")
OPERATIONS = ("StartQueryExecution", "GetQueryExecution", "GetQueryResults", "StopQueryExecution",
              "ListQueryExecutions")
START_WAIT_S = 5.0  # StartQueryExecution answers when the query is done, or after this long
MAX_RUNTIME_S = 30 * 60  # Athena's default DML timeout; a RUNNING execution older than this FAILED
WORKGROUP = "primary"
MAX_QUERY_CHARS = 262144  # the service model's QueryString max
MAX_LIST = 50  # ListQueryExecutions' MaxResults bound
ENGINE = {"SelectedEngineVersion": "AUTO", "EffectiveEngineVersion": "Athena engine version 3"}
USER_ERROR = 2  # AthenaError.ErrorCategory: 1 system, 2 user, 3 other


def invalid(message: str) -> ApiError:
    """Athena's answer to a request it does not take (HTTP 400)."""
    return ApiError("InvalidRequestException", message, 400)


class QueryFailed(Exception):
    """A query that ends FAILED; ``kind`` is the error name Athena puts before the message."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}")


def _string(body: dict[str, Any], key: str, *, required: bool = False, lo: int = 1, hi: int = 1024) -> str | None:
    value = body.get(key)
    if value is None:
        if required:
            raise invalid(f"{key} is required")
        return None
    if not isinstance(value, str) or not lo <= len(value) <= hi:
        raise invalid(f"{key} must be a string of {lo} to {hi} characters; got {str(value)[:80]!r}")
    return value


def _token(execution_id: str | None, offset: int) -> str:
    return base64.urlsafe_b64encode(orjson.dumps({"q": execution_id, "o": offset})).decode()


def _offset(token: Any, execution_id: str | None) -> int:
    if token is None:
        return 0
    try:
        data = orjson.loads(base64.urlsafe_b64decode(str(token).encode()))
        offset = data["o"]
        same = data["q"] == execution_id
    except (binascii.Error, ValueError, TypeError, KeyError, orjson.JSONDecodeError):
        raise invalid(f"NextToken {str(token)[:60]!r} is not a token this server returned") from None
    if type(offset) is not int or offset < 0 or not same:
        raise invalid(f"NextToken {str(token)[:60]!r} is not a token this server returned for this request")
    return offset


def _output_file(location: str, execution_id: str) -> str:
    return f"{location.rstrip('/')}/{execution_id}.csv"


class AthenaApi:
    """The five Athena operations; ``run_blocking`` runs a blocking call off the event loop."""

    def __init__(self, store: Any, run_blocking: Callable[..., Awaitable[Any]], *, threads: int = 2) -> None:
        self.store = store
        self.run_blocking = run_blocking
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="featurestream-athena")
        self._executions: Executions | None = None
        self._running: dict[str, Any] = {}  # id -> its OfflineQuery, while it runs in this process
        self._lock = threading.Lock()

    @property
    def executions(self) -> Executions:
        if self._executions is None:
            self._executions = Executions(self.store.online.client, self.store.config.topic_prefix)
        return self._executions

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)

    def start_warm_up(self) -> None:
        """Run :meth:`warm_up` on the query pool (one of its threads), without waiting for it."""
        self.pool.submit(self.warm_up)

    def warm_up(self) -> None:
        """Load the query engine and open the catalog and S3 now, not in a worker's first query.

        Cold, those cost ~1.5 s of a worker's first query (pyiceberg's import alone ~1.2 s), and
        several times that on a loaded machine: enough to miss :data:`START_WAIT_S`, so that the
        SDK's first poll finds the query RUNNING and it waits 5 s more. Best effort: a catalog or S3
        that does not answer now is reported by the query that needs it.
        """
        import duckdb
        import pyiceberg.io.pyarrow  # noqa: F401 - the scan's file reader, imported by its first plan

        from sinks.offline.query import OfflineQuery  # noqa: F401 - the engine, with DuckDB and pyiceberg

        duckdb.connect().close()
        config = self.store.config
        try:
            self.store.offline_tables()
            if config.offline_uri:
                open_filesystem(config.offline_uri, config.storage_options())
        except Exception as exc:  # noqa: BLE001 - a warm-up must not stop the worker
            log.info("Athena warm-up: the offline store did not open (%s: %s); the first query will retry",
                     type(exc).__name__, exc)

    async def handle(self, operation: str, body: dict[str, Any], permissions: Permissions) -> dict[str, Any]:
        if operation == "StartQueryExecution":
            return await self.start(body, permissions)
        if operation == "GetQueryExecution":
            return await self.run_blocking(self.get_execution, body)
        if operation == "GetQueryResults":
            return await self.run_blocking(self.get_results, body)
        if operation == "StopQueryExecution":
            return await self.run_blocking(self.stop, body)
        return await self.run_blocking(self.list_executions, body)

    # ---------------------------------------------------------------- StartQueryExecution
    async def start(self, body: dict[str, Any], permissions: Permissions) -> dict[str, Any]:
        query = _string(body, "QueryString", required=True, hi=MAX_QUERY_CHARS)
        token = _string(body, "ClientRequestToken", lo=32, hi=128)
        workgroup = _string(body, "WorkGroup", hi=128)
        if workgroup not in (None, WORKGROUP):
            raise invalid(f"WorkGroup {workgroup} is not found (featurestream has one work group, {WORKGROUP!r})")
        context = body.get("QueryExecutionContext") or {}
        result_config = body.get("ResultConfiguration") or {}
        if not isinstance(context, dict) or not isinstance(result_config, dict):
            raise invalid("QueryExecutionContext and ResultConfiguration must be objects")
        database = _string(context, "Database", hi=255)
        catalog = _string(context, "Catalog", hi=256)
        if catalog is not None and catalog.lower() != athena_sql.CATALOG:
            raise invalid(f"Catalog {catalog!r} is not known; the feature groups' tables are in "
                          f"{data_catalog.CATALOG!r}")
        output = _string(result_config, "OutputLocation", hi=1024)
        if output is None:
            raise invalid("No output location provided. An output location is required either through the "
                          "Workgroup result configuration setting or as an API input "
                          "(ResultConfiguration.OutputLocation, s3://bucket/prefix/).")
        if not output.startswith("s3://") or len(output[5:].strip("/")) == 0:
            raise invalid(f"OutputLocation {output[:100]!r} is not an S3 location; use s3://bucket/prefix/")
        assert query is not None
        try:
            parsed = athena_sql.parse(query, database)
        except athena_sql.AthenaSqlError as exc:
            raise invalid(str(exc)) from None
        execution_id = str(uuid.uuid4())
        if token is not None:
            first = await self.run_blocking(self.executions.claim_token, token, execution_id)
            if first != execution_id:
                return {"QueryExecutionId": first}  # the same request again: the same execution
        now = time.time()
        doc = {"QueryExecutionId": execution_id, "Query": query, "StatementType": "DML",
               "ResultConfiguration": {"OutputLocation": _output_file(output, execution_id)},
               "QueryExecutionContext": {k: v for k, v in (("Database", database), ("Catalog", catalog)) if v},
               "Status": {"State": "RUNNING", "SubmissionDateTime": now},
               "WorkGroup": WORKGROUP, "EngineVersion": ENGINE}
        await self.run_blocking(self.executions.create, execution_id, doc)
        future = self.pool.submit(self._execute, doc, parsed, database, permissions)
        try:
            await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(future)), START_WAIT_S)
        except TimeoutError:
            pass  # still running: GetQueryExecution says RUNNING until it ends
        return {"QueryExecutionId": execution_id}

    def _execute(self, doc: dict[str, Any], parsed: athena_sql.ParsedQuery, database: str | None,
                 permissions: Permissions) -> None:
        execution_id = doc["QueryExecutionId"]
        started = time.perf_counter()
        try:
            columns, rows, scanned = self._answer(execution_id, parsed, database, permissions,
                                                  doc["ResultConfiguration"]["OutputLocation"])
            state, reason = "SUCCEEDED", None
            doc["_result"] = {"columns": columns, "rows": rows}
        except QueryFailed as exc:
            state, reason, scanned = "FAILED", str(exc), 0
        except Exception as exc:  # noqa: BLE001 - the execution must end FAILED, whatever happened
            log.exception("Athena query %s failed unexpectedly", execution_id)
            state, reason, scanned = "FAILED", f"INTERNAL_ERROR: {type(exc).__name__} (the server log has the details)", 0
        finally:
            with self._lock:
                self._running.pop(execution_id, None)
        took = int((time.perf_counter() - started) * 1000)
        status = doc["Status"]
        status.update({"State": state, "CompletionDateTime": time.time()})
        if reason is not None:
            status["StateChangeReason"] = reason
            status["AthenaError"] = {"ErrorCategory": USER_ERROR, "ErrorType": 1000, "Retryable": False,
                                     "ErrorMessage": reason}
        doc["Statistics"] = {"EngineExecutionTimeInMillis": took, "DataScannedInBytes": scanned,
                             "TotalExecutionTimeInMillis": took, "QueryQueueTimeInMillis": 0,
                             "ServicePreProcessingTimeInMillis": 0, "QueryPlanningTimeInMillis": 0,
                             "ServiceProcessingTimeInMillis": 0}
        self.executions.advance(execution_id, doc)  # a stop that came first keeps CANCELLED

    def _resolve(self, parsed: athena_sql.ParsedQuery, permissions: Permissions) -> dict[athena_sql.TableRef, Any]:
        registry = self.store.registry
        groups = registry.list()
        found: dict[athena_sql.TableRef, Any] = {}
        for ref in parsed.tables:
            group = data_catalog.table_of(groups, ref.database, ref.table)
            if group is None:  # created through another worker a moment ago?
                groups = list(registry.refresh().values())
                group = data_catalog.table_of(groups, ref.database, ref.table)
            if group is None:
                raise QueryFailed("TABLE_NOT_FOUND", f"Table '{ref.qualified()}' does not exist (a feature group's "
                                  "table is named by OfflineStoreConfig.DataCatalogConfig in DescribeFeatureGroup)")
            if not permissions.allows(Action.READ, group.name):
                raise QueryFailed("ACCESS_DENIED", f"this access key may not read feature group {group.name!r} "
                                  f"(table '{ref.qualified()}')")
            found[ref] = group
        return found

    def _answer(self, execution_id: str, parsed: athena_sql.ParsedQuery, database: str | None,
                permissions: Permissions, output_file: str) -> tuple[list[dict[str, Any]], int, int]:
        """Run the query and write its CSV; (ColumnInfo list, row count, bytes scanned)."""
        resolved = self._resolve(parsed, permissions)
        names = sorted({g.name for g in resolved.values()})
        views: dict[athena_sql.TableRef, str] = {}
        try:
            with self.store.offline_query(names) as q:
                with self._lock:
                    self._running[execution_id] = q
                for n, (ref, group) in enumerate(resolved.items()):
                    view = f"__athena_{n}"
                    columns = q.source(group.name).schema.names
                    q.execute(f"CREATE TEMP VIEW {quote_ident(view)} AS "
                              f"{view_sql(group, columns, quote_ident(group.name))}")
                    views[ref] = view
                # From here on the statement reads only what is registered: no files, no settings.
                q.execute("SET enable_external_access = false", views=False)
                q.execute("SET lock_configuration = true", views=False)
                result = q.execute(athena_sql.render(parsed, views, database), views=False)
        except TableShapeError as exc:
            raise QueryFailed("NOT_SUPPORTED", str(exc)) from None
        except FeatureStoreError as exc:
            message = str(exc)
            for ref, view in views.items():
                message = message.replace(view, ref.table)
            raise QueryFailed("QUERY_FAILED", message.removeprefix("query failed: ")) from None
        result = result.rename_columns([c.lower() for c in result.column_names])
        data = athena_results.to_csv(result)
        try:
            fs, path = open_filesystem(output_file, self.store.config.storage_options())
            fs.pipe_file(path, data)
        except (*STORAGE_EXCEPTIONS, FeatureStoreError) as exc:
            raise QueryFailed("OUTPUT_FAILED", f"cannot write the result to {output_file}: "
                              f"{type(exc).__name__}: {exc}") from None
        return athena_results.column_info(result.schema), result.num_rows, result.nbytes

    # ---------------------------------------------------------------- the other operations
    def _doc(self, body: dict[str, Any]) -> dict[str, Any]:
        execution_id = _string(body, "QueryExecutionId", required=True, hi=128)
        assert execution_id is not None
        doc = self.executions.get(execution_id)
        if doc is None:
            raise invalid(f"QueryExecution {execution_id} was not found")
        status = doc["Status"]
        if status["State"] in ACTIVE and time.time() - status["SubmissionDateTime"] > MAX_RUNTIME_S \
                and execution_id not in self._running:
            status.update({"State": "FAILED", "CompletionDateTime": time.time(),
                           "StateChangeReason": f"the query did not finish within {MAX_RUNTIME_S // 60} minutes "
                           "(or the server running it stopped); run it again"})
            self.executions.advance(execution_id, doc)
            doc = self.executions.get(execution_id) or doc
        return doc

    def get_execution(self, body: dict[str, Any]) -> dict[str, Any]:
        doc = self._doc(body)
        return {"QueryExecution": {k: v for k, v in doc.items() if not k.startswith("_")}}

    def get_results(self, body: dict[str, Any]) -> dict[str, Any]:
        doc = self._doc(body)
        state = doc["Status"]["State"]
        if state != "SUCCEEDED":
            raise invalid(f"Query has not yet finished. Current state: {state}" if state in ACTIVE
                          else f"Query did not succeed (state {state}): {doc['Status'].get('StateChangeReason', '')}")
        limit = body.get("MaxResults", athena_results.MAX_PAGE)
        if type(limit) is not int or not 1 <= limit <= athena_results.MAX_PAGE:
            raise invalid(f"MaxResults must be an integer from 1 to {athena_results.MAX_PAGE}; got {limit!r}")
        offset = _offset(body.get("NextToken"), doc["QueryExecutionId"])
        location = doc["ResultConfiguration"]["OutputLocation"]
        try:
            fs, path = open_filesystem(location, self.store.config.storage_options())
            rows = athena_results.parse_csv(fs.cat_file(path))
        except (*STORAGE_EXCEPTIONS, FeatureStoreError) as exc:
            raise ApiError("InternalServerException", f"cannot read the result file {location}: "
                           f"{type(exc).__name__}", 500) from None
        out: dict[str, Any] = {"UpdateCount": 0,
                               "ResultSet": {"Rows": athena_results.page(rows, offset, limit),
                                             "ResultSetMetadata": {"ColumnInfo": doc["_result"]["columns"]}}}
        if offset + limit < len(rows):
            out["NextToken"] = _token(doc["QueryExecutionId"], offset + limit)
        return out

    def stop(self, body: dict[str, Any]) -> dict[str, Any]:
        doc = self._doc(body)
        if doc["Status"]["State"] in ACTIVE:
            doc["Status"].update({"State": "CANCELLED", "CompletionDateTime": time.time(),
                                  "StateChangeReason": "Query was cancelled by user"})
            if self.executions.advance(doc["QueryExecutionId"], doc):
                with self._lock:
                    running = self._running.get(doc["QueryExecutionId"])
                if running is not None:
                    running.con.interrupt()
        return {}

    def list_executions(self, body: dict[str, Any]) -> dict[str, Any]:
        workgroup = _string(body, "WorkGroup", hi=128)
        if workgroup not in (None, WORKGROUP):
            raise invalid(f"WorkGroup {workgroup} is not found (featurestream has one work group, {WORKGROUP!r})")
        limit = body.get("MaxResults", MAX_LIST)
        if type(limit) is not int or not 0 <= limit <= MAX_LIST:
            raise invalid(f"MaxResults must be an integer from 0 to {MAX_LIST}; got {limit!r}")
        limit = limit or MAX_LIST
        offset = _offset(body.get("NextToken"), None)
        ids, more = self.executions.ids(offset, limit)
        out: dict[str, Any] = {"QueryExecutionIds": ids}
        if more:
            out["NextToken"] = _token(None, offset + limit)
        return out


__all__ = ["OPERATIONS", "START_WAIT_S", "AthenaApi", "QueryFailed", "invalid"]
