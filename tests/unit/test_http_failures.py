"""An InternalFailure (500) is logged once, at ERROR, with its traceback and the request id the client got.

The handler runs in process, served as ``featurestream serve`` serves it (protocol.aws_server, here inside
aiohttp's test server; no Kafka or Redis behind it: nothing here reaches them); the failure is raised by a
runtime operation replaced for the test.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import BaseTestServer, TestClient

from featurestream.config import Config
from featurestream.http.app import HANDLER_OPTIONS, Server
from featurestream.http.incoming import aiohttp_handler
from featurestream.http.protocol import aws_server
from featurestream.sdk import FeatureStore
from schemas.errors import WireFormatError

UNREACHABLE = Config(kafka_bootstrap="127.0.0.1:1", redis_url="redis://127.0.0.1:1/0")


class _ServedAsServe(BaseTestServer):
    """aiohttp's test server around the handler as listen.run serves the connections the fast lane hands over."""

    def __init__(self, server: Server) -> None:
        self._server = server
        super().__init__()

    async def _make_runner(self, **kwargs: Any) -> web.ServerRunner:
        return web.ServerRunner(aws_server(aiohttp_handler(self._server.answer), client_max_size=self._server.limits.max_body_bytes,
                                           **HANDLER_OPTIONS), **kwargs)


async def _get_record(server: Server) -> tuple[int, dict, dict]:
    async with TestClient(_ServedAsServe(server)) as client:
        resp = await client.get("/FeatureGroup/orders", params={"RecordIdentifierValueAsString": "o-1"})
        return resp.status, dict(resp.headers), orjson.loads(await resp.read())


@pytest.mark.parametrize("failure", [RuntimeError("boom: a bug of ours"),
                                     # one of our typed errors that maps to no client error
                                     WireFormatError("boom: stored bytes do not decode")])
def test_an_internal_failure_is_logged_once_at_error_with_its_cause(failure, caplog):
    server = Server(FeatureStore(UNREACHABLE), credentials=None)

    async def fails(_name: str, _query: dict) -> dict:
        raise failure

    server.runtime.get_record = fails  # type: ignore[method-assign]
    caplog.set_level(logging.DEBUG, logger="featurestream.http")
    status, headers, body = asyncio.run(_get_record(server))

    assert status == 500 and body["__type"] == "InternalFailure"
    request_id = headers["x-amzn-RequestId"]
    assert "the server log has the details" in body["message"] and request_id in body["message"]
    assert "boom" not in body["message"]  # the cause is for the operator, not the client
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    record = errors[0]
    assert record.exc_info is not None and record.exc_info[1] is failure  # the traceback, once
    assert request_id in record.getMessage() and "GetRecord" in record.getMessage()
    assert "boom" in record.getMessage()


def test_request_ids_are_uuid_shaped_and_never_repeat_within_or_across_workers():
    import uuid

    from featurestream.http.app import RequestIds

    first, second = RequestIds(), RequestIds()  # two worker processes each build their own
    ids = [first.new() for _ in range(1000)] + [second.new() for _ in range(1000)]
    assert len(set(ids)) == len(ids)
    for rid in ids[:3] + ids[-3:]:
        parsed = uuid.UUID(rid)
        assert str(parsed) == rid and parsed.version == 4
