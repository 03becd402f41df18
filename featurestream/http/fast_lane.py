"""The fast lane: plain HTTP/1.1 requests parsed and answered without aiohttp's per-request machinery.

aiohttp's server spends ~45 CPU-µs a request on this machine before and after our handler (its parser's
message and URL objects, a StreamReader per body, the request and response objects, the writer): measured
2026-12-05 with wrk at 8 connections, a floor that produces each PUT's body to Kafka and answers once it is
acknowledged served 9,586-10,788 puts/s at 87-97 server CPU-µs on aiohttp, 16,299-16,587 at 48 on a bare
asyncio protocol (1 worker; with 2 workers 6,244-7,509 against 9,914-16,830).

So a connection starts here, and every request's head is parsed by one strict pattern, then answered by
the same handler (``app.Server.answer``). Only requests the pattern is sure of are taken: ``GET``, ``PUT``,
``POST`` or ``DELETE`` of an origin-form target in HTTP/1.1, header lines of token names and values without
control characters, no header name twice, a ``Host``, a head within :data:`MAX_HEAD_BYTES` and
:data:`MAX_HEADERS` lines, a plain ``Content-Length`` within the body limit (or none), no
``Transfer-Encoding``, ``TE``, ``Expect`` or ``Upgrade``, a ``Connection`` of ``keep-alive`` or ``close`` if
any. The first request that is anything else, or whose head has not all arrived, hands the connection to
aiohttp's server for good, with the bytes not yet parsed: aiohttp parses them as if it had had the
connection from the start, and answers every case it always answered (chunked bodies, 413, 417, 431,
slow or malformed heads) exactly as before. What the fast lane takes aiohttp parses the same way
(``tests/unit/test_fast_lane_parse.py`` compares the two on generated requests).

The handler runs on the head; the body, when it has not come with it (urllib3 writes the head and the body
apart), is awaited inside ``FastRequest.body`` within the server's body timeout (408 past it), so the
header's checks still answer before any body is waited for. Requests on one connection are answered one at
a time, in order (a pipelined one waits in the buffer, and reading pauses while more than
:data:`PAUSE_READING_AT` bytes wait beyond the body being read); a request answered from its head while its
body is still arriving closes the connection after the answer (aiohttp read and dropped such a body for up
to its lingering time, then kept the connection); a connection idle longer than the keep-alive timeout is
closed, as aiohttp closes its own.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable
from email.utils import formatdate
from http import HTTPStatus
from typing import cast

from featurestream.http.body import ClientClosed, body_timed_out
from featurestream.http.errors import RUNTIME
from featurestream.http.incoming import Answer, Answerer
from featurestream.http.limits import Limits
from featurestream.http.protocol import error_answer

log = logging.getLogger("featurestream.http")

MAX_HEAD_BYTES = 8190  # aiohttp's max_line_size: no head the fast lane takes is one aiohttp would refuse
MAX_HEADERS = 100  # aiohttp refuses past 128
PAUSE_READING_AT = 1 << 20
KEEPALIVE_TIMEOUT_S = 3630.0  # aiohttp's RequestHandler default, which `serve` keeps
SWEEP_S = 60.0  # how often idle connections are looked at

# Request line and header lines, up to and including the last header line's CRLF. A token name, a colon,
# a value of visible characters, spaces, tabs and obs-text (no CR, LF or other control character): what
# RFC 9110/9112 allow, without obs-fold. The target: origin-form, visible ASCII without '#'.
_HEAD = re.compile(
    rb"(GET|PUT|POST|DELETE) (/[!-\"$-~]*) HTTP/1\.1\r\n"
    rb"((?:[!#$%&'*+.^_`|~0-9A-Za-z-]+:[^\x00-\x08\x0a-\x1f\x7f]*\r\n)*)")
_DIGITS = re.compile(r"[0-9]{1,15}")
_HANDED_OVER = {"transfer-encoding", "expect", "upgrade", "te"}
_REASONS = {status.value: status.phrase for status in HTTPStatus}


class FastRequest:
    """A request whose head the fast lane parsed (:class:`incoming.Incoming`). Its body is whole when the
    head is, or arrives later (a client that writes the head and the body apart, as urllib3 does): the
    handler runs on the head alone, so the header's checks answer before any body is waited for."""

    __slots__ = ("_body", "_connection", "_first", "_pairs", "_waiter", "keep_alive", "length", "method",
                 "raw_path")

    def __init__(self, method: str, raw_path: str, pairs: list[tuple[str, str]], first: dict[str, str],
                 length: int, keep_alive: bool, connection: _Connection | None) -> None:
        self.method = method
        self.raw_path = raw_path
        self._pairs = pairs
        self._first = first
        self.length = length  # of the body (Content-Length; 0 when none was sent)
        self.keep_alive = keep_alive
        self._connection = connection
        self._body: bytes | None = None
        self._waiter: asyncio.Future[bytes] | None = None

    def header(self, name: str) -> str | None:
        return self._first.get(name.lower())  # names are unique here: a repeated one is handed over

    def header_pairs(self) -> list[tuple[str, str]]:
        return self._pairs

    def declared_size(self, limits: Limits) -> int:
        return self.length

    async def body(self, limits: Limits) -> bytes:
        """The whole body (within the lane's limit, the server's); once it has arrived, or within
        ``limits.body_timeout_s`` (408 past it, ClientClosed if the client leaves first)."""
        if self._body is not None:
            return self._body
        connection = self._connection
        if connection is None or connection.closed:
            raise ClientClosed("the connection closed before the body arrived")
        self._waiter = waiter = asyncio.get_running_loop().create_future()
        connection.await_body(self)  # the body arrived meanwhile: settles the waiter at once
        try:
            async with asyncio.timeout(limits.body_timeout_s):
                return await waiter
        except TimeoutError:
            raise body_timed_out(limits, self.length) from None

    def body_arrived(self, body: bytes) -> None:
        self._body = body
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(body)

    def connection_lost(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(ClientClosed("the connection closed before the body arrived"))

    @property
    def body_read(self) -> bool:
        return self._body is not None

    def gone(self) -> bool:
        return self._connection is not None and self._connection.closed


def parse_head(buffer: bytes | bytearray, max_body: int, connection: _Connection | None = None
               ) -> tuple[FastRequest, int] | None:
    """The first request's head in ``buffer`` and where its body starts, or None when the fast lane does not
    take it (the head not whole yet, or anything but the plain shape the module's docstring describes)."""
    end = buffer.find(b"\r\n\r\n", 0, MAX_HEAD_BYTES + 4)
    if end < 0:
        return None
    match = _HEAD.fullmatch(buffer, 0, end + 2)
    if match is None:
        return None
    lines = match.group(3).decode("latin-1").split("\r\n")
    lines.pop()  # after the last CRLF
    if len(lines) > MAX_HEADERS:
        return None
    pairs: list[tuple[str, str]] = []
    first: dict[str, str] = {}
    length = 0
    keep_alive = True
    for line in lines:
        name, _, value = line.partition(":")
        value = value.strip(" \t")
        lower = name.lower()
        if lower in first:  # aiohttp refuses a second Host, Content-Type...: leave every repeat to it
            return None
        first[lower] = value
        pairs.append((name, value))
        if lower == "content-length":
            if _DIGITS.fullmatch(value) is None:
                return None
            length = int(value)
        elif lower == "connection":
            token = value.lower()
            if token == "close":
                keep_alive = False
            elif token != "keep-alive":
                return None
        elif lower in _HANDED_OVER:
            return None
    if "host" not in first or length > max_body:  # aiohttp refuses a request without Host; 413 is its
        return None
    request = FastRequest(match.group(1).decode("ascii"), match.group(2).decode("ascii"), pairs, first, length,
                          keep_alive, connection)
    return request, end + 4


class _Date:
    """The Date header's value, formatted once a second."""

    def __init__(self) -> None:
        self._second = -1
        self._text = ""

    def now(self) -> str:
        second = int(time.time())
        if second != self._second:
            self._second = second
            self._text = formatdate(second, usegmt=True)
        return self._text


def encode_answer(answer: Answer, date: str, keep_alive: bool) -> bytes:
    """The answer's bytes on the wire: status line, headers, body."""
    head = [f"HTTP/1.1 {answer.status} {_REASONS.get(answer.status, 'Unknown')}",
            f"Content-Type: {answer.content_type}", f"Content-Length: {len(answer.body)}", f"Date: {date}"]
    head.extend(f"{name}: {value}" for name, value in answer.headers)
    if not keep_alive:
        head.append("Connection: close")
    head.append("\r\n")
    return "\r\n".join(head).encode("latin-1") + answer.body


def _internal_failure(exc: BaseException) -> Answer:
    err = error_answer(500, exc, None)
    return Answer(500, err.body(RUNTIME), "application/json", (("x-amzn-ErrorType", err.code_for(RUNTIME)),),
                  close=True)


class FastLane:
    """The connections of one listening socket: ``answer`` answers their requests; ``fallback`` (a factory of
    asyncio protocols, aiohttp's low-level server) takes each connection the lane hands over."""

    def __init__(self, answer: Answerer, fallback: Callable[[], asyncio.Protocol], *, max_body: int,
                 keepalive_timeout_s: float = KEEPALIVE_TIMEOUT_S, sweep_s: float = SWEEP_S,
                 on_hand_over: Callable[[], None] | None = None) -> None:
        self.answer = answer
        self.fallback = fallback
        self.max_body = max_body
        self.keepalive_timeout_s = keepalive_timeout_s
        self.sweep_s = sweep_s
        self.date = _Date()
        self.stopping = False
        self.handed_over = 0  # connections given to the fallback
        self.on_hand_over = on_hand_over  # told of each (the server's metrics)
        self._connections: set[_Connection] = set()
        self._sweep: asyncio.TimerHandle | None = None
        self._answering = 0  # requests being answered, on every connection
        self._all_answered: asyncio.Event | None = None  # made by shutdown while some are

    @property
    def open_connections(self) -> int:
        """Connections the lane serves now (not those it handed over)."""
        return len(self._connections)

    def __call__(self) -> asyncio.Protocol:
        """A protocol for one new connection (``loop.create_server``'s factory)."""
        return _Connection(self)

    # -- called by the connections
    def opened(self, connection: _Connection) -> None:
        self._connections.add(connection)
        if self._sweep is None:
            self._sweep = asyncio.get_running_loop().call_later(self.sweep_s, self._close_idle)

    def left(self, connection: _Connection) -> None:
        self._connections.discard(connection)

    def request_started(self) -> None:
        self._answering += 1

    def request_ended(self) -> None:
        self._answering -= 1
        if self._answering == 0 and self._all_answered is not None:
            self._all_answered.set()

    def _close_idle(self) -> None:
        deadline = asyncio.get_running_loop().time() - self.keepalive_timeout_s
        for connection in list(self._connections):
            if not connection.busy and connection.idle_since < deadline:
                connection.close()
        self._sweep = (asyncio.get_running_loop().call_later(self.sweep_s, self._close_idle)
                       if self._connections else None)

    async def shutdown(self, timeout_s: float) -> None:
        """Close idle connections now, the others after their answer, waiting at most ``timeout_s``."""
        self.stopping = True
        for connection in list(self._connections):
            if not connection.busy:
                connection.close()
        if self._answering:
            self._all_answered = asyncio.Event()
            try:
                async with asyncio.timeout(timeout_s):
                    await self._all_answered.wait()
            except TimeoutError:
                pass
        for connection in list(self._connections):
            connection.close()
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None


class _Connection(asyncio.Protocol):
    """One client connection while the fast lane serves it. The buffer holds what came after the head of
    the request being answered: its body first (or what has come of it), then the next requests."""

    def __init__(self, lane: FastLane) -> None:
        self._lane = lane
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._paused = False
        self._current: FastRequest | None = None  # the request being answered
        self._awaiting: FastRequest | None = None  # the same, while it waits for its body
        self.busy = False
        self.closed = False
        self.idle_since = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's
        self.idle_since = asyncio.get_running_loop().time()
        self._lane.opened(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._lane.left(self)
        if self._awaiting is not None:
            self._awaiting.connection_lost()
            self._awaiting = None

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if not self.busy:
            self._next()
            return
        waiting = self._awaiting
        if waiting is not None and len(self._buffer) >= waiting.length:
            self._awaiting = None
            waiting.body_arrived(self._pop(waiting.length))
        current = self._current
        unread = current.length if current is not None and not current.body_read else 0
        if len(self._buffer) > PAUSE_READING_AT + unread and not self._paused and self._transport is not None:
            self._paused = True  # a client that pipelines more than this waits for our answers
            self._transport.pause_reading()

    def await_body(self, request: FastRequest) -> None:
        """``request`` (being answered) waits for its body: handed to it as soon as it is whole."""
        if len(self._buffer) >= request.length:
            request.body_arrived(self._pop(request.length))
        else:
            self._awaiting = request

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def _pop(self, size: int) -> bytes:
        taken = bytes(self._buffer[:size])
        del self._buffer[:size]
        return taken

    def _next(self) -> None:
        if not self._buffer or self.closed:
            return
        parsed = parse_head(self._buffer, self._lane.max_body, self)
        if parsed is None:
            self._hand_over()
            return
        request, body_start = parsed
        del self._buffer[:body_start]
        if len(self._buffer) >= request.length:
            request.body_arrived(self._pop(request.length))
        self._current = request
        self.busy = True
        self._lane.request_started()
        asyncio.get_running_loop().create_task(self._serve(request))

    async def _serve(self, request: FastRequest) -> None:
        lane = self._lane
        try:
            answer = await lane.answer(request)
        except Exception as exc:  # the handler answers its own failures; this is a bug of ours
            log.error("InternalFailure outside a handler in %s %s", request.method, request.raw_path[:200],
                      exc_info=exc)
            answer = _internal_failure(exc)
        self.busy = False
        self._current = self._awaiting = None
        lane.request_ended()
        transport = self._transport
        if self.closed or transport is None or transport.is_closing():
            return
        keep_alive = request.keep_alive and not answer.close and not lane.stopping
        if not request.body_read:  # answered from the head (a refusal): the body is not the next request
            if len(self._buffer) >= request.length:
                del self._buffer[:request.length]
            else:
                keep_alive = False  # its rest is still coming: only closing tells it from what follows
        transport.write(encode_answer(answer, lane.date.now(), keep_alive))
        if not keep_alive:
            transport.close()
            return
        self.idle_since = asyncio.get_running_loop().time()
        if self._paused:
            self._paused = False
            transport.resume_reading()
        self._next()

    def _hand_over(self) -> None:
        """Give this connection, and the bytes not yet parsed, to the fallback for good."""
        transport = self._transport
        assert transport is not None
        lane = self._lane
        lane.left(self)
        lane.handed_over += 1
        if lane.on_hand_over is not None:
            lane.on_hand_over()
        protocol = lane.fallback()
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        if self._paused:
            self._paused = False
            transport.resume_reading()
        pending = bytes(self._buffer)
        self._buffer.clear()
        self._transport = None
        protocol.data_received(pending)


__all__ = ["KEEPALIVE_TIMEOUT_S", "MAX_HEADERS", "MAX_HEAD_BYTES", "SWEEP_S", "FastLane", "FastRequest",
           "encode_answer", "parse_head"]
