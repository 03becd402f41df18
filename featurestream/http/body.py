"""Reading a request body within the server's limits, and telling a client that left from a failure.

Three ways a body read ends other than with the body, each answered differently:
- larger than allowed: 413, before reading it (Content-Length) or as soon as it overflows (chunked);
- not complete within the deadline (a Content-Length larger than what is sent, or a trickle): 408,
  and the connection is closed, since the rest of that body can no longer be told from the next
  request;
- the client closed the connection: nobody is left to answer. That is the client's doing, not a
  server error, so it is :class:`ClientClosed`, counted apart and never logged as a failure.
"""

from __future__ import annotations

import asyncio

from aiohttp import HttpVersion11, hdrs, web

from featurestream.http.errors import ApiError
from featurestream.http.limits import Limits

_IDENTITY = ("", "identity")


class ClientClosed(Exception):
    """The client closed its connection before its request was read or answered."""


async def read_body(request: web.BaseRequest, limits: Limits) -> bytes:
    """The whole body, or ApiError (413, 408, 417) or ClientClosed. A client that sent ``Expect: 100-continue``
    is told to send its body here, once every check that needs no body has passed (aiohttp's low-level
    server, which serves us, leaves that answer to the handler)."""
    length = request.content_length
    if length is not None and length > limits.max_body_bytes:
        raise ApiError(None, f"request body is {length} bytes; at most {limits.max_body_bytes} are accepted", 413)
    try:
        await _continue_if_expected(request)
        if request.content.is_eof():  # the whole body is already here (a small one usually is): no wait, no timer
            return await request.read()
        async with asyncio.timeout(limits.body_timeout_s):
            return await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise ApiError(None, f"request body is larger than {limits.max_body_bytes} bytes", 413) from None
    except TimeoutError:
        raise body_timed_out(limits, length) from None
    except web.RequestPayloadError as exc:  # a bad chunk size, a body shorter than its length at EOF...
        raise ApiError.validation(f"the request body is malformed: {' '.join(str(exc).split())[:200]}") from None
    except ConnectionError as exc:  # aiohttp's "Connection lost" (ConnectionResetError) and its kin
        raise ClientClosed(str(exc) or type(exc).__name__) from None


def body_timed_out(limits: Limits, length: int | None) -> ApiError:
    """The 408 for a body not whole within ``limits.body_timeout_s`` (whichever lane was reading it)."""
    return ApiError("RequestTimeout", f"the request body did not arrive within {limits.body_timeout_s:g} s "
                    f"(Content-Length {length if length is not None else 'not given'}); the connection "
                    "is closed", 408)


async def _continue_if_expected(request: web.BaseRequest) -> None:
    """``HTTP/1.1 100 Continue`` for ``Expect: 100-continue`` (HTTP/1.1 only, as aiohttp's router sent it);
    ApiError 417 for any other expectation."""
    expect = request.headers.get(hdrs.EXPECT)
    if expect is None or request.version != HttpVersion11:
        return
    if expect.strip().lower() != "100-continue":
        raise ApiError(None, f"Expect {expect[:40]!r} is not supported; only 100-continue is", 417)
    await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    # An interim answer, not the answer: an error can still be sent after it (aiohttp's handle_error
    # sends one only while nothing of the answer has been written).
    request.writer.output_size = 0


def refuse_encoded(content_encoding: str | None) -> None:
    """ApiError 400 for a compressed body (``Content-Encoding: gzip``, ``deflate``, ``br``...), before
    reading it. The SageMaker SDKs never compress requests, and aiohttp would inflate the body while
    reading it: a few KB of gzip can become gigabytes, past every bound set on the bytes sent."""
    encoding = (content_encoding or "").strip().lower()
    if encoding not in _IDENTITY:
        raise ApiError.validation(f"Content-Encoding {encoding[:40]!r} is not accepted: send the request body "
                                  "uncompressed (the AWS SDKs do)")


def declared_size(request: web.BaseRequest, limits: Limits) -> int:
    """The bytes this request's body may take: its Content-Length, the largest body accepted when it
    is chunked (its size is unknown until it has arrived), 0 when it has none."""
    if request.content_length is not None:
        return request.content_length
    return limits.max_body_bytes if request.body_exists else 0


def client_gone(request: web.BaseRequest) -> bool:
    """True once the client's connection is closed (checked after a handler ran: nobody to answer)."""
    transport = request.transport
    return transport is None or transport.is_closing()


__all__ = ["ClientClosed", "body_timed_out", "client_gone", "declared_size", "read_body", "refuse_encoded"]
