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

aiohttp offers no switch for either, so :class:`AwsAppRunner` serves the application with a request
handler whose ``handle_error`` answers this way. ``run`` replaces ``web.run_app``.
"""

from __future__ import annotations

import asyncio
import logging
import re
import signal
import socket
from typing import Any

from aiohttp import hdrs, web, web_protocol, web_server

from featurestream.http.errors import INTERNAL_FAILURE, RUNTIME, ApiError

log = logging.getLogger("featurestream.http")
MAX_REASON_CHARS = 200


class _Response(web.Response):
    """A response without the ``Server`` header (responses of our handlers lose it in
    :func:`drop_server_header`; these are aiohttp's own, which no application hook sees)."""

    async def _prepare_headers(self) -> None:
        await super()._prepare_headers()
        self.headers.popall(hdrs.SERVER, None)


async def drop_server_header(_request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare`` hook: no software or version in any answer."""
    response.headers.popall(hdrs.SERVER, None)


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
        resp = _Response(body=err.body(RUNTIME), status=status, headers={"x-amzn-ErrorType": code},
                         content_type="application/json")
        resp.force_close()
        return resp


class _AwsServer(web_server.Server):
    def __call__(self) -> web_protocol.RequestHandler:
        return _AwsRequestHandler(self, loop=self._loop, **self._kwargs)


class AwsAppRunner(web.AppRunner):
    """``web.AppRunner`` whose connections answer aiohttp's own errors the AWS way."""

    async def _make_server(self) -> web_server.Server:
        server = await super()._make_server()
        # aiohttp builds its Server inside Application; only the handler factory changes, and the
        # subclass adds no state, so the instance is re-typed rather than rebuilt from its privates.
        server.__class__ = _AwsServer
        return server


EVENT_LOOPS = ("uvloop", "asyncio")


def run(app: web.Application, sock: socket.socket, *, shutdown_timeout: float, event_loop: str = "uvloop",
        **handler: Any) -> None:
    """Serve ``app`` on ``sock`` until SIGTERM or SIGINT (blocking); ``handler``: AppRunner options.

    ``event_loop``: uvloop (the default) or asyncio's own. Measured on this 2-core machine with wrk at 8
    connections against one worker answering GetRecord: uvloop served 1,343-1,569 requests/s at 632-726
    CPU-µs each, asyncio's loop 870-1,277 at 750-938 (runs alternated). Every aiohttp and redis-py
    call runs the same on both; ``--event-loop asyncio`` is there to tell a loop problem from ours."""

    async def main() -> None:
        runner = AwsAppRunner(app, shutdown_timeout=shutdown_timeout, **handler)
        await runner.setup()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        try:
            await web.SockSite(runner, sock).start()
            await stop.wait()
        finally:
            await runner.cleanup()

    if event_loop == "uvloop":
        import uvloop

        uvloop.run(main())
    elif event_loop == "asyncio":
        asyncio.run(main())
    else:
        raise ValueError(f"event_loop must be one of {', '.join(EVENT_LOOPS)}; got {event_loop!r}")


__all__ = ["EVENT_LOOPS", "AwsAppRunner", "drop_server_header", "error_answer", "run"]
