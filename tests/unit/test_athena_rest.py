"""Athena's REST-JSON binding (botocore 1.44 and later) maps to the JSON 1.1 binding's operations and input."""

from __future__ import annotations

import pytest

from featurestream.http import athena
from featurestream.http.app import operation_of
from featurestream.http.athena_rest import operation_of as rest_operation_of
from featurestream.http.athena_rest import request_input
from featurestream.http.errors import ApiError

QID = "5b1a8f0e-0b7f-4d38-9d7a-3f0c1f2b9a10"


@pytest.mark.parametrize(("method", "path", "operation"), [
    ("POST", "/query-executions", "StartQueryExecution"),
    ("GET", "/query-executions", "ListQueryExecutions"),
    ("GET", f"/query-executions/{QID}", "GetQueryExecution"),
    ("GET", f"/query-executions/{QID}/results", "GetQueryResults"),
    ("POST", f"/query-executions/{QID}/stop", "StopQueryExecution"),
])
def test_each_operation_is_found_by_method_and_path_and_routed_as_athena(method, path, operation):
    assert rest_operation_of(method, path) == operation
    assert operation_of(method, path, None) == operation  # what metrics and logs name it, before the body is read
    assert operation in athena.OPERATIONS


@pytest.mark.parametrize(("method", "path"), [
    ("PUT", "/query-executions"), ("DELETE", f"/query-executions/{QID}"), ("POST", f"/query-executions/{QID}"),
    ("GET", "/query-executions/"), ("GET", f"/query-executions/{QID}/stop"), ("POST", f"/query-executions/{QID}/results"),
    ("GET", f"/query-executions/{QID}/results/more"), ("GET", "/query-executions-x"), ("GET", "query-executions"),
    ("GET", "//query-executions"), ("POST", "/"), ("GET", "/FeatureGroup/g"),
])
def test_any_other_method_or_path_is_not_athena(method, path):
    assert rest_operation_of(method, path) is None
    assert operation_of(method, path, None) not in athena.OPERATIONS


def test_the_input_is_what_the_json_binding_carries():
    assert request_input("StartQueryExecution", "/query-executions", {},
                         {"QueryString": "SELECT 1", "ClientRequestToken": "t" * 32}) == \
        {"QueryString": "SELECT 1", "ClientRequestToken": "t" * 32}
    assert request_input("GetQueryExecution", f"/query-executions/{QID}", {}, {}) == {"QueryExecutionId": QID}
    assert request_input("StopQueryExecution", f"/query-executions/{QID}/stop", {}, {}) == {"QueryExecutionId": QID}
    assert request_input("GetQueryResults", f"/query-executions/{QID}/results",
                         {"MaxResults": ["2"], "NextToken": ["abc"], "QueryResultType": ["DATA_ROWS"]}, {}) == \
        {"QueryExecutionId": QID, "MaxResults": 2, "NextToken": "abc", "QueryResultType": "DATA_ROWS"}
    assert request_input("ListQueryExecutions", "/query-executions",
                         {"MaxResults": ["50"], "WorkGroup": ["primary"], "Unrelated": ["x"]}, {}) == \
        {"MaxResults": 50, "WorkGroup": "primary"}


def test_the_execution_id_is_percent_decoded():
    assert request_input("GetQueryExecution", "/query-executions/a%2Fb%20c", {}, {}) == {"QueryExecutionId": "a/b c"}


@pytest.mark.parametrize("given", ["-1", "1.5", "ten", "", "1e3", "\u0661", "9" * 30])
def test_a_max_results_that_is_no_plain_integer_stays_text_for_the_handler_to_refuse(given):
    got = request_input("GetQueryResults", f"/query-executions/{QID}/results", {"MaxResults": [given]}, {})
    assert got["MaxResults"] == given  # athena.py answers: MaxResults must be an integer from 1 to 1000; got ...


def test_a_member_given_twice_in_the_query_string_is_refused_by_name():
    with pytest.raises(ApiError) as info:
        request_input("ListQueryExecutions", "/query-executions", {"NextToken": ["a", "b"]}, {})
    assert (info.value.code, info.value.status) == ("InvalidRequestException", 400)
    assert "NextToken is given 2 times" in str(info.value)
