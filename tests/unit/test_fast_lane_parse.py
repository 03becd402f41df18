"""The fast lane's request parser against aiohttp's (the one every handed-over connection gets).

Whatever the fast lane takes, aiohttp must parse the same way: the same method, target, headers, body,
keep-alive and length, and no error. Requests are generated near the shape the SDKs send, with the
mutations that matter (bare LF, obs-fold, control bytes, repeated and forbidden headers, bad lengths,
other versions and methods, truncation, a pipelined next request) so that both outcomes are common.
"""

from __future__ import annotations

import asyncio
from unittest import mock

from aiohttp.http_parser import HttpRequestParser
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from featurestream.http.fast_lane import MAX_HEAD_BYTES, FastRequest, encode_answer, parse_head
from featurestream.http.incoming import Answer

MAX_BODY = 256
NEXT = b"GET /next HTTP/1.1\r\nHost: h\r\n\r\n"


def parse_request(buffer: bytes, max_body: int) -> tuple[FastRequest, int] | None:
    """The first request in ``buffer``, head and whole body, and the bytes it took, as the lane's connections
    take it (``parse_head``, then the body once all of it is there); None when the lane would not yet."""
    parsed = parse_head(buffer, max_body)
    if parsed is None:
        return None
    request, start = parsed
    if len(buffer) < start + request.length:
        return None
    request.body_arrived(buffer[start:start + request.length])
    return request, start + request.length


def aiohttp_parse(raw: bytes) -> list[tuple[object, bytes, bool]]:
    """aiohttp's messages for ``raw`` (its C parser, as the server uses it): (message, body, body whole)."""

    async def parse() -> list[tuple[object, bytes, bool]]:
        parser = HttpRequestParser(mock.Mock(), asyncio.get_running_loop(), 2 ** 16, max_line_size=8190,
                                   max_field_size=16384)
        messages, _upgraded, _tail = parser.feed_data(raw)
        return [(message, payload.read_nowait(-1) if hasattr(payload, "read_nowait") else b"",
                 payload.is_eof()) for message, payload in messages]

    return asyncio.run(parse())


_NAMES = st.sampled_from(["Host", "host", "Content-Type", "X-Amz-Target", "X-Amz-Date", "Authorization",
                          "Connection", "Content-Length", "Transfer-Encoding", "Expect", "TE", "Upgrade",
                          "Accept-Encoding", "User-Agent", "amz-sdk-request", "X-Custom_1"])
_ODD_NAMES = st.text(alphabet="abcXYZ-_!#~ :\t\"(),/;@[]{}\x00\x7f", min_size=0, max_size=6)
_VALUE_BYTES = st.binary(max_size=12) | st.text(alphabet="abcdef 0123456789\t,;=/-+.:", max_size=20).map(
    lambda t: t.encode())


_PLAIN_NAMES = st.sampled_from(["Content-Type", "X-Amz-Target", "X-Amz-Date", "Authorization", "Accept-Encoding",
                                 "User-Agent", "amz-sdk-request", "X-Custom_1", "Connection"])
_PLAIN_VALUES = st.text(alphabet="abcdef 0123456789,;=/-+.:", max_size=20).map(lambda t: t.encode())


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    """Half the requests plain (each part of the SDKs' shape), half with any part odd, one in four."""
    odd_mode = draw(st.booleans())

    def pick(plain: st.SearchStrategy, odd: st.SearchStrategy):  # noqa: ANN202 - a draw of either
        return draw(odd) if odd_mode and draw(st.integers(0, 3)) == 0 else draw(plain)

    method = pick(st.sampled_from([b"GET", b"PUT", b"POST", b"DELETE"]),
                  st.sampled_from([b"HEAD", b"OPTIONS", b"get", b"PATCH", b"CONNECT", b"G ET"]))
    target = pick(st.sampled_from([b"/", b"/FeatureGroup/orders", b"/BatchGetRecord", b"/a%20b?x=%ff&y",
                                   b"/FeatureGroup/orders?RecordIdentifierValueAsString=o-1"]),
                  st.binary(max_size=10).map(lambda b: b"/" + b)
                  | st.sampled_from([b"*", b"http://h/x", b"", b"/a b", b"/a#f"]))
    version = pick(st.just(b"HTTP/1.1"), st.sampled_from([b"HTTP/1.0", b"HTTP/2.0", b"http/1.1", b"HTTP/1.1 "]))
    body = draw(st.binary(max_size=40))
    headers: list[tuple[bytes, bytes]] = []
    if pick(st.just(True), st.booleans()):
        headers.append((b"Host", b"127.0.0.1:8080"))
    for _ in range(draw(st.integers(0, 5))):
        name = pick(_PLAIN_NAMES, _NAMES | _ODD_NAMES).encode("latin-1")
        value = pick(_PLAIN_VALUES, _VALUE_BYTES)
        if name.lower() == b"connection" and not odd_mode:
            value = draw(st.sampled_from([b"keep-alive", b"close", b"Keep-Alive"]))
        headers.append((name, value))
    length = pick(st.sampled_from(["exact", "none"]), st.sampled_from(["short", "long", "plus", "huge"]))
    value = {"exact": str(len(body)), "short": str(max(len(body) - 1, 0)), "long": str(len(body) + 3),
             "plus": f"+{len(body)}", "huge": str(MAX_BODY + 1)}.get(length)
    if value is not None or body:
        headers.insert(draw(st.integers(0, len(headers))), (b"Content-Length", (value or str(len(body))).encode()))
    eol = pick(st.just(b"\r\n"), st.sampled_from([b"\n", b"\r"]))
    lines = [method + b" " + target + b" " + version]
    for name, value_bytes in headers:
        sep = pick(st.sampled_from([b": ", b":", b":  ", b":\t"]), st.just(b" : "))
        lines.append(name + sep + value_bytes + draw(st.sampled_from([b"", b"", b" ", b"\t"])))
    if pick(st.just(False), st.booleans()):
        lines.insert(draw(st.integers(1, len(lines))), b" folded")
    raw = eol.join(lines) + eol + eol + body
    if draw(st.booleans()):
        raw += NEXT
    if pick(st.just(False), st.booleans()):
        raw = raw[:draw(st.integers(0, len(raw)))]
    return raw


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(requests())
def test_what_the_fast_lane_takes_aiohttp_parses_the_same_way(raw: bytes) -> None:
    taken = parse_request(raw, MAX_BODY)
    assume(taken is not None)
    request, used = taken
    # The bytes the fast lane took are one whole request to aiohttp, without error...
    messages = aiohttp_parse(raw[:used])
    assert len(messages) == 1
    message, body, whole = messages[0]
    assert whole
    # ...the same request.
    assert message.method == request.method
    assert message.path == request.raw_path
    assert [(k.decode("latin-1"), v.decode("latin-1")) for k, v in message.raw_headers] == request.header_pairs()
    assert body == asyncio.run(request.body(None))  # type: ignore[arg-type]
    assert message.should_close == (not request.keep_alive)
    for name, value in request.header_pairs():
        assert request.header(name.upper()) == value
    # And what follows is parsed from where the fast lane stopped, as aiohttp would.
    if raw[used:] == NEXT:
        assert parse_request(NEXT, MAX_BODY) is not None


_TALLY = {True: 0, False: 0}


@settings(max_examples=400, deadline=None)
@given(requests())
def _tally(raw: bytes) -> None:
    _TALLY[parse_request(raw, MAX_BODY) is not None] += 1


def test_the_generated_requests_are_often_taken_and_often_not() -> None:
    # The property above is only as good as what it sees: it would pass vacuously if the fast lane
    # took nothing (or aiohttp never had to refuse anything).
    _tally()
    assert _TALLY[True] > 40 and _TALLY[False] > 40, _TALLY


def test_an_sdk_request_is_taken_whole() -> None:
    body = b'{"Record":[{"FeatureName":"id","ValueAsString":"o-1"}]}'
    raw = (b"PUT /FeatureGroup/orders HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nAccept-Encoding: identity\r\n"
           b"Content-Type: application/json\r\nX-Amz-Date: 20261205T170000Z\r\nAuthorization: AWS4-HMAC-SHA256 "
           b"Credential=k/20261205/us-east-1/sagemaker/aws4_request, SignedHeaders=host;x-amz-date, Signature=ab\r\n"
           b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    request, used = parse_request(raw + b"PUT", MAX_BODY)
    assert used == len(raw)
    assert (request.method, request.raw_path, request.keep_alive) == ("PUT", "/FeatureGroup/orders", True)
    assert request.header("content-type") == "application/json"
    assert request.header("X-Amz-Target") is None


def test_what_is_not_plain_or_not_whole_is_left_to_aiohttp() -> None:
    plain = b"GET /FeatureGroup/o?x=1 HTTP/1.1\r\nHost: h\r\n\r\n"
    assert parse_request(plain, MAX_BODY) is not None
    for raw in [plain[:-1],  # the head not ended yet
                b"PUT / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
                b"PUT / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\nx",
                b"PUT / HTTP/1.1\r\nHost: h\r\nContent-Length: 300\r\n\r\n" + b"x" * 300,  # past the limit: 413
                b"GET / HTTP/1.1\r\nHost: h\r\nHost: h\r\n\r\n",  # a repeat
                b"GET / HTTP/1.1\r\n\r\n",  # no Host
                b"GET / HTTP/1.0\r\nHost: h\r\n\r\n",
                b"HEAD / HTTP/1.1\r\nHost: h\r\n\r\n",
                b"GET / HTTP/1.1\nHost: h\n\n",
                b"GET / HTTP/1.1\r\nHost: h\r\nConnection: upgrade\r\n\r\n",
                b"GET / HTTP/1.1\r\nHost: h\r\nX: a\x00b\r\n\r\n",
                b"GET / HTTP/1.1\r\nHost: h\r\nX-Long: " + b"v" * MAX_HEAD_BYTES + b"\r\n\r\n"]:
        assert parse_request(raw, MAX_BODY) is None, raw[:60]


def test_a_head_is_taken_before_its_body_has_all_arrived() -> None:
    raw = b"PUT /x HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\n"
    assert parse_request(raw + b"abc", MAX_BODY) is None  # not whole
    request, body_start = parse_head(raw + b"abc", MAX_BODY)
    assert (body_start, request.length, request.body_read) == (len(raw), 5, False)


def _aiohttp_reads(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    async def read() -> tuple[int, dict[str, str], bytes]:
        from aiohttp.http_parser import HttpResponseParser

        parser = HttpResponseParser(mock.Mock(), asyncio.get_running_loop(), 2 ** 16)
        messages, _, _ = parser.feed_data(raw)
        (message, payload), = messages
        return message.code, {k.decode(): v.decode() for k, v in message.raw_headers}, payload.read_nowait(-1)

    return asyncio.run(read())


def test_an_answer_is_written_as_an_http_response() -> None:
    answer = Answer(404, b'{"__type":"ResourceNotFound"}', "application/x-amz-json-1.1",
                    (("x-amzn-ErrorType", "ResourceNotFound"), ("x-amzn-RequestId", "r-1")))
    status, headers, body = _aiohttp_reads(encode_answer(answer, "Sat, 05 Dec 2026 17:00:00 GMT", True))
    assert (status, body) == (404, answer.body)
    assert headers == {"Content-Type": "application/x-amz-json-1.1", "Content-Length": str(len(answer.body)),
                       "Date": "Sat, 05 Dec 2026 17:00:00 GMT", "x-amzn-ErrorType": "ResourceNotFound",
                       "x-amzn-RequestId": "r-1"}
    _, closing, _ = _aiohttp_reads(encode_answer(answer, "d", False))
    assert closing["Connection"] == "close"
