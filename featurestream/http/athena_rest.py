"""Athena's REST-JSON binding: the same five query operations, addressed by method and path.

botocore 1.44 moved Athena from JSON 1.1 (``POST /`` with ``X-Amz-Target: AmazonAthena.<Operation>``,
every input member in the JSON body) to REST-JSON, which the SageMaker SDKs' ``athena_query()`` then
speaks: the execution id travels in the path and the paging members in the query string. Both bindings
reach the same handlers (``athena.AthenaApi.handle``) with the same input, so an SDK on either side of
that change gets the same answers. Pure: no I/O.

| operation | method and path | query string |
| --- | --- | --- |
| StartQueryExecution | POST /query-executions | — (the JSON body) |
| ListQueryExecutions | GET /query-executions | NextToken, MaxResults, WorkGroup |
| GetQueryExecution | GET /query-executions/{QueryExecutionId} | — |
| GetQueryResults | GET /query-executions/{QueryExecutionId}/results | NextToken, MaxResults, QueryResultType |
| StopQueryExecution | POST /query-executions/{QueryExecutionId}/stop | — |
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

from featurestream.http.athena import invalid

ROOT = "query-executions"
# The query-string members of each operation (botocore's model); MaxResults is an integer there.
_QUERY_MEMBERS = {"ListQueryExecutions": ("NextToken", "MaxResults", "WorkGroup"),
                  "GetQueryResults": ("NextToken", "MaxResults", "QueryResultType")}
_MAX_DIGITS = 9  # MaxResults is at most 1,000: more digits are refused by the handler as out of range


def operation_of(method: str, path: str) -> str | None:
    """The Athena operation at ``method`` ``path`` (still percent-encoded), or None: not an Athena path."""
    parts = path.split("/")
    if len(parts) < 2 or parts[0] or parts[1] != ROOT:
        return None
    if len(parts) == 2:
        return {"POST": "StartQueryExecution", "GET": "ListQueryExecutions"}.get(method)
    if not parts[2]:
        return None
    if len(parts) == 3:
        return "GetQueryExecution" if method == "GET" else None
    if len(parts) == 4:
        return {("GET", "results"): "GetQueryResults", ("POST", "stop"): "StopQueryExecution"}.get((method, parts[3]))
    return None


def request_input(operation: str, path: str, query: dict[str, list[str]], body: dict[str, Any]) -> dict[str, Any]:
    """The operation's input as the JSON 1.1 binding carries it: ``body`` with the path's execution id and
    the query string's members added. InvalidRequestException for a member given twice."""
    members = dict(body)
    parts = path.split("/")
    if len(parts) >= 3:
        members["QueryExecutionId"] = unquote(parts[2], errors="replace")
    for name in _QUERY_MEMBERS.get(operation, ()):
        values = query.get(name)
        if values is None:
            continue
        if len(values) != 1:
            raise invalid(f"{name} is given {len(values)} times in the query string; give it once")
        value: Any = values[0]
        if name == "MaxResults" and value.isascii() and value.isdigit() and len(value) <= _MAX_DIGITS:
            value = int(value)  # anything else stays text, which the handler refuses by name
        members[name] = value
    return members


__all__ = ["ROOT", "operation_of", "request_input"]
