"""aiohttp's own answers in AWS's shape, and running the application with them.

aiohttp answers some requests before any handler of ours runs: a malformed request line, a header
line too long, too many headers, a bad chunk. It answers them in plain text and logs each with a
traceback at ERROR, so anyone who can reach the port could fill the log by sending garbage. Here
those answers are AWS-shaped JSON (``x-amzn-ErrorType`` and ``{"__type", "message"}``: the SDKs read
them like any other error), logged at debug level only, since nothing failed on our side. A 500
that escapes a handler is the exception: it is an InternalFailure, logged once at ERROR with its
traceback.

No answer names the server's software or version: aiohttp adds ``Server: Python/3.x aiohttp/3.y``
to every response, which tells an attacker which advisories apply; it is removed.

aiohttp offers no switch for either, so :func:`aws_server` builds aiohttp's low-level server with a
request handler whose ``handle_error`` answers this way, and every answer of ours is a :class:`Response`.
``listen.run`` serves it, behind the fast lane (``fast_lane.py``), which hands it every connection whose
requests are not of the plain kind the SDKs send.

One handler answers every request (``app.Server.answer`` routes by itself), so it is served by aiohttp's
low-level server, without a ``web.Application``: the application's router, its middleware chain and
its response signal did nothing for us and cost 5-18 % of a request (measured 2026-12-05, one worker,
wrk at 8 connections, alternating runs: PutRecord +4.8 % and +14 %, GetRecord +6.8 % and +18 %, in two
sittings). The one thing the router did that we need, answering ``Expect: 100-continue``, the handler
does itself (``body.read_body``), after the checks that need no body.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import hdrs, web, web_protocol, web_request, web_server

from featurestream.http.errors import INTERNAL_FAILURE, RUNTIME, ApiError

log = logging.getLogger("featurestream.http")
MAX_REASON_CHARS = 200


Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


class Response(web.Response):
    """A response without the ``Server`` header, which aiohttp adds while preparing every response: our
    handlers' answers and aiohttp's own refusals are all of this kind."""

    async def _prepare_headers(self) -> None:
        await super()._prepare_headers()
        self.headers.popall(hdrs.SERVER, None)


def error_answer(status: int, exc: BaseException | None, message: str | None) -> ApiError:
    """What aiohttp's ``status`` for a request it could not hand to us becomes."""
    if status >= 500:
        return ApiError(INTERNAL_FAILURE, "internal error; the server log has the details", status)
    # aiohttp's text, up to where it starts quoting what the client sent (not echoed back)
    reason = re.split(r"[:'\"]", " ".join(str(message or exc or "").split()), maxsplit=1)[0].strip()
    reason = reason[:MAX_REASON_CHARS]
    kind = type(exc).__name__ if exc is not None else "HTTP error"
    text = {413: "the request is too large", 431: "the request's headers are too large"}.get(
        status, "the HTTP request is malformed")
    return ApiError(None, f"{text} ({kind}: {reason})" if reason else f"{text} ({kind})", status)


class _AwsRequestHandler(web_protocol.RequestHandler):
    def handle_error(self, request: web.BaseRequest, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        if request.writer.output_size > 0:  # as aiohttp: part of an answer is out, nothing more can go
            raise ConnectionError("Response is sent already, cannot send another response with the error message")
        err = error_answer(status, exc, message)
        if status >= 500:
            log.error("InternalFailure outside a handler in %s %s: %s", request.method, request.path[:200],
                      message or type(exc).__name__, exc_info=exc)
        else:
            log.debug("answered %d to a request aiohttp could not parse: %s", status, err)
        code = err.code_for(RUNTIME)
        resp = Response(body=err.body(RUNTIME), status=status, headers={"x-amzn-ErrorType": code},
                        content_type="application/json")
        resp.force_close()
        return resp


class _AwsServer(web_server.Server):
    def __call__(self) -> web_protocol.RequestHandler:
        return _AwsRequestHandler(self, loop=self._loop, **self._kwargs)


def aws_server(handler: Handler, *, client_max_size: int, **options: Any) -> web_server.Server:
    """aiohttp's low-level server for ``handler``, answering aiohttp's own errors the AWS way; built in
    the event loop that will serve it. ``client_max_size`` bounds the body ``request.read()`` returns,
    chunked ones too; ``options``: aiohttp's RequestHandler options (``max_field_size``, ``lingering_time``,
    ``auto_decompress``, ``access_log``...)."""
    loop = asyncio.get_running_loop()

    def request(message: Any, payload: Any, protocol: Any, writer: Any, task: Any) -> web.BaseRequest:
        return web_request.BaseRequest(message, payload, protocol, writer, task, loop,
                                       client_max_size=client_max_size)

    return _AwsServer(handler, request_factory=request, loop=loop, **options)


__all__ = ["Handler", "Response", "aws_server", "error_answer"]
