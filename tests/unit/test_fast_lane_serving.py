"""The fast lane serving real connections on loopback, with aiohttp's server behind it (as ``listen.run``
builds them), on uvloop and on asyncio's own loop: order, hand-over, closing, keep-alive, shutdown."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
import uvloop

from featurestream.http.body import ClientClosed
from featurestream.http.errors import ApiError
from featurestream.http.fast_lane import PAUSE_READING_AT, FastLane
from featurestream.http.incoming import Answer, Incoming, aiohttp_handler
from featurestream.http.limits import Limits
from featurestream.http.protocol import aws_server

BODY_TIMEOUT_S = 0.5
LIMITS = Limits(max_body_bytes=1024, body_timeout_s=BODY_TIMEOUT_S)
DEADLINE_S = 10.0


class Answers:
    """An answerer: the body answered is method, target and body sent; ``/hold`` waits for ``release``."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.holding = asyncio.Event()
        self.seen: list[str] = []
        self.gone_after_hold: list[bool] = []

        self.failures: list[BaseException] = []

    async def __call__(self, request: Incoming) -> Answer:
        self.seen.append(request.raw_path)
        if request.raw_path in ("/hold", "/hold-refuse"):  # held before the body is read, if ever
            self.holding.set()
            await self.release.wait()
            self.gone_after_hold.append(request.gone())
        if request.raw_path in ("/refuse", "/hold-refuse"):  # answered from the head, as a bad signature is
            return Answer(403, b"no", "text/plain")
        try:
            body = await request.body(LIMITS)
        except (ApiError, ClientClosed) as exc:
            self.failures.append(exc)
            return Answer(getattr(exc, "status", 400), str(exc).encode(), "text/plain", close=True)
        if request.raw_path == "/bug":
            raise RuntimeError("a bug of ours")
        return Answer(200, f"{request.method} {request.raw_path} {body.decode()}".encode(), "text/plain",
                      (("x-amzn-RequestId", "r"),))


async def _serve(answers: Answers, max_body: int = LIMITS.max_body_bytes, **lane_options: float
                 ) -> tuple[FastLane, asyncio.AbstractServer, int]:
    fallback = aws_server(aiohttp_handler(answers), client_max_size=max_body, access_log=None)
    lane = FastLane(answers, fallback, max_body=max_body, **lane_options)
    server = await asyncio.get_running_loop().create_server(lane, "127.0.0.1", 0)
    return lane, server, server.sockets[0].getsockname()[1]


async def _answer(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    async with asyncio.timeout(DEADLINE_S):
        head = await reader.readuntil(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")[:-2]
        headers = dict(line.split(": ", 1) for line in lines)
        body = await reader.readexactly(int(headers["Content-Length"]))
    return int(status_line.split()[1]), headers, body


async def _eof(reader: asyncio.StreamReader) -> bool:
    async with asyncio.timeout(DEADLINE_S):
        return await reader.read() == b""


def _run(loop_name: str, test: Callable[[], Awaitable[None]]) -> None:
    if loop_name == "uvloop":
        uvloop.run(test())
    else:
        asyncio.run(test())


LOOPS = pytest.mark.parametrize("loop_name", ["uvloop", "asyncio"])
PLAIN = b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n"


@LOOPS
def test_pipelined_requests_are_answered_one_at_a_time_in_order(loop_name: str) -> None:
    async def test() -> None:
        answers = Answers()
        lane, server, port = await _serve(answers)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        second = b"PUT /b HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nhi"
        writer.write(b"GET /hold HTTP/1.1\r\nHost: h\r\n\r\n" + second)
        await asyncio.wait_for(answers.holding.wait(), DEADLINE_S)
        writer.write(second)  # and one more while the first is being answered
        await writer.drain()
        # Nothing to wait for when the lane is right (the others wait for the first's answer): a grace
        # period in which a lane that answered them at once would have.
        await asyncio.sleep(0.2)
        assert answers.seen == ["/hold"]
        answers.release.set()
        assert (await _answer(reader))[2] == b"GET /hold "
        assert (await _answer(reader))[2] == b"PUT /b hi"
        assert (await _answer(reader))[2] == b"PUT /b hi"
        assert lane.handed_over == 0
        writer.close()
        server.close()

    _run(loop_name, test)


@LOOPS
def test_a_connection_with_a_request_the_lane_does_not_take_goes_to_aiohttp_with_its_bytes(loop_name: str) -> None:
    async def test() -> None:
        answers = Answers()
        lane, server, port = await _serve(answers)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(PLAIN)
        status, _, body = await _answer(reader)
        assert (status, body) == (200, b"GET /a ")
        # chunked, then a plain one in the same write: both parsed by aiohttp from the handed-over bytes
        writer.write(b"PUT /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n" + PLAIN)
        status, headers, body = await _answer(reader)
        assert (status, body, headers["x-amzn-RequestId"]) == (200, b"PUT /c abc", "r")
        assert (await _answer(reader))[2] == b"GET /a "
        assert lane.handed_over == 1
        # a head that arrives in pieces is handed over too, and answered once whole
        reader2, writer2 = await asyncio.open_connection("127.0.0.1", port)
        writer2.write(PLAIN[:10])
        await writer2.drain()
        async with asyncio.timeout(DEADLINE_S):
            while lane.handed_over < 2:
                await asyncio.sleep(0.01)
        writer2.write(PLAIN[10:])
        assert (await _answer(reader2))[2] == b"GET /a "
        assert answers.seen == ["/a", "/c", "/a", "/a"]
        writer.close()
        writer2.close()
        server.close()

    _run(loop_name, test)


@LOOPS
def test_the_lane_answers_as_aiohttp_does(loop_name: str) -> None:
    async def test() -> None:
        answers = Answers()
        lane, server, port = await _serve(answers)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"PUT /x?y=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc")
        fast = await _answer(reader)
        writer.write(b"PUT /x?y=1 HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
        slow = await _answer(reader)
        assert lane.handed_over == 1
        for _status, headers, _body in (fast, slow):
            headers.pop("Date")
        assert fast == slow
        writer.close()
        server.close()

    _run(loop_name, test)


@LOOPS
def test_connection_close_is_answered_then_closed(loop_name: str) -> None:
    async def test() -> None:
        answers = Answers()
        _lane, server, port = await _serve(answers)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /a HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n" + PLAIN)
        status, headers, body = await _answer(reader)
        assert (status, headers["Connection"], body) == (200, "close", b"GET /a ")
        assert await _eof(reader)
        assert answers.seen == ["/a"]  # the request after it is not read
        writer.close()
        server.close()

    _run(loop_name, test)


@LOOPS
def test_a_failure_outside_the_handler_is_an_internal_failure_and_closes(loop_name: str) -> None:
    async def test() -> None:
        _lane, server, port = await _serve(Answers())
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /bug HTTP/1.1\r\nHost: h\r\n\r\n")
        status, headers, body = await _answer(reader)
        assert (status, headers["x-amzn-ErrorType"]) == (500, "InternalFailure")
        assert b"Traceback" not in body and b"a bug of ours" not in body
        assert await _eof(reader)
        writer.close()
        server.close()

    _run(loop_name, test)


@LOOPS
def test_an_idle_connection_is_closed_after_the_keepalive_timeout(loop_name: str) -> None:
    async def test() -> None:
        _lane, server, port = await _serve(Answers(), keepalive_timeout_s=0.2, sweep_s=0.05)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(PLAIN)
        await _answer(reader)
        assert await _eof(reader)
        writer.close()
        server.close()

    _run(loop_name, test)


@LOOPS
def test_shutdown_closes_idle_connections_and_finishes_the_answer_being_made(loop_name: str) -> None:
    async def test() -> None:
        answers = Answers()
        lane, server, port = await _serve(answers)
        busy_reader, busy_writer = await asyncio.open_connection("127.0.0.1", port)
        idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", port)
        idle_writer.write(PLAIN)
        await _answer(idle_reader)
        busy_writer.write(b"GET /hold HTTP/1.1\r\nHost: h\r\n\r\n")
        await asyncio.wait_for(answers.holding.wait(), DEADLINE_S)
        server.close()
        stopping = asyncio.create_task(lane.shutdown(DEADLINE_S))
        assert await _eof(idle_reader)
        assert not stopping.done()
        answers.release.set()
        status, headers, _ = await _answer(busy_reader)
        assert (status, headers["Connection"]) == (200, "close")
        await asyncio.wait_for(stopping, DEADLINE_S)
        assert await _eof(busy_reader)
        busy_writer.close()
        idle_writer.close()

    _run(loop_name, test)


@LOOPS
def test_a_client_that_leaves_is_seen_gone_and_gets_nothing_written(loop_name: str) -> None:
    async def test() -> None:
        answers = Answers()
        _lane, server, port = await _serve(answers)
        _reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /hold HTTP/1.1\r\nHost: h\r\n\r\n")
        await asyncio.wait_for(answers.holding.wait(), DEADLINE_S)
        writer.close()
        await writer.wait_closed()
        # the server sees the close once its loop reads the EOF; then the answer is dropped
        async with asyncio.timeout(DEADLINE_S):
            while _lane.open_connections:
                await asyncio.sleep(0.01)
        answers.release.set()
        async with asyncio.timeout(DEADLINE_S):
            while not answers.gone_after_hold:
                await asyncio.sleep(0.01)
        assert answers.gone_after_hold == [True]
        server.close()

    _run(loop_name, test)


@LOOPS
def test_a_body_sent_after_its_head_is_waited_for_in_the_lane(loop_name: str) -> None:
    async def test() -> None:
        answers = Answers()
        lane, server, port = await _serve(answers)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"PUT /b HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\n")  # as urllib3 sends it
        await writer.drain()
        async with asyncio.timeout(DEADLINE_S):
            while answers.seen != ["/b"]:  # the handler runs on the head
                await asyncio.sleep(0.01)
        writer.write(b"ab")
        await writer.drain()
        writer.write(b"cde" + PLAIN)
        assert (await _answer(reader))[2] == b"PUT /b abcde"
        assert (await _answer(reader))[2] == b"GET /a "
        assert lane.handed_over == 0
        writer.close()
        server.close()

    _run(loop_name, test)


@LOOPS
def test_a_body_that_does_not_come_is_a_408_and_the_connection_is_closed(loop_name: str) -> None:
    async def test() -> None:
        answers = Answers()
        _lane, server, port = await _serve(answers)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        started = asyncio.get_running_loop().time()
        writer.write(b"PUT /b HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nab")
        status, headers, body = await _answer(reader)
        assert (status, headers["Connection"]) == (408, "close") and b"within 0.5 s" in body
        assert asyncio.get_running_loop().time() - started >= BODY_TIMEOUT_S - 0.05
        assert await _eof(reader)
        writer.close()
        server.close()

    _run(loop_name, test)


@LOOPS
def test_an_answer_from_the_head_skips_its_body_or_closes_while_the_body_is_still_coming(loop_name: str) -> None:
    async def test() -> None:
        answers = Answers()
        lane, server, port = await _serve(answers)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        # the body is here: skipped, and the next request is read after it
        writer.write(b"PUT /refuse HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nGET" + PLAIN)
        assert (await _answer(reader))[:1] == (403,)
        assert (await _answer(reader))[2] == b"GET /a "
        # the body is not all here: answered, then closed (what follows could not be told from the body)
        writer.write(b"PUT /refuse HTTP/1.1\r\nHost: h\r\nContent-Length: 9\r\n\r\nGET")
        status, headers, _ = await _answer(reader)
        assert (status, headers["Connection"]) == (403, "close")
        assert await _eof(reader)
        assert lane.handed_over == 0 and answers.seen == ["/refuse", "/a", "/refuse"]
        writer.close()
        server.close()

    _run(loop_name, test)


@LOOPS
def test_a_client_that_leaves_before_its_body_is_seen_closed(loop_name: str) -> None:
    async def test() -> None:
        answers = Answers()
        _lane, server, port = await _serve(answers)
        _reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"PUT /b HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nab")
        await writer.drain()
        async with asyncio.timeout(DEADLINE_S):
            while answers.seen != ["/b"]:
                await asyncio.sleep(0.01)
        writer.close()
        async with asyncio.timeout(DEADLINE_S):
            while not answers.failures:
                await asyncio.sleep(0.01)
        assert isinstance(answers.failures[0], ClientClosed)
        server.close()

    _run(loop_name, test)


@LOOPS
def test_a_body_that_came_while_its_handler_was_busy_is_read_or_skipped(loop_name: str) -> None:
    async def test() -> None:
        for path, want in (("/hold", b"PUT /hold abc"), ("/hold-refuse", b"no")):
            answers = Answers()
            lane, server, port = await _serve(answers)
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(f"PUT {path} HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\n".encode())
            await asyncio.wait_for(answers.holding.wait(), DEADLINE_S)
            writer.write(b"abc" + PLAIN)  # the body comes while the handler is busy with the head
            await writer.drain()
            await asyncio.sleep(0.2)  # a grace period for the server to read it (same loop: it will have)
            answers.release.set()
            assert (await _answer(reader))[2] == want
            assert (await _answer(reader))[2] == b"GET /a "  # the body was not taken for the next request
            assert lane.handed_over == 0 and not answers.failures
            writer.close()
            server.close()

    _run(loop_name, test)


@LOOPS
def test_a_body_larger_than_the_pause_threshold_is_read_while_its_handler_was_busy(loop_name: str) -> None:
    async def test() -> None:
        answers = Answers()
        size = PAUSE_READING_AT * 2
        lane, server, port = await _serve(answers, max_body=size * 2)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"PUT /hold HTTP/1.1\r\nHost: h\r\nContent-Length: {size}\r\n\r\n".encode())
        await asyncio.wait_for(answers.holding.wait(), DEADLINE_S)
        writer.write(b"a" * size)  # more than the pause threshold, all of it this request's body
        await asyncio.sleep(0.2)  # a grace period for the server to read what it will
        answers.release.set()
        await writer.drain()
        status, _, body = await _answer(reader)
        assert (status, len(body), answers.failures) == (200, len("PUT /hold ") + size, [])
        writer.close()
        server.close()

    _run(loop_name, test)
