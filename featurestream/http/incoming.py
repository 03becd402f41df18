"""A request as the handler sees it, and its answer, whichever lane the connection is served by.

``featurestream serve`` reads requests two ways (``listen.run``): the fast lane (``fast_lane.py``) parses
the plain requests the SDKs send itself, and aiohttp's low-level server takes every connection the fast
lane hands over (anything unusual: a chunked or slow body, ``Expect``, a malformed head...). The handler
(``app.Server.answer``) is written once against :class:`Incoming` and returns an :class:`Answer`; each
lane writes that answer its own way. :class:`AiohttpIncoming` and :func:`aiohttp_handler` are aiohttp's
side of it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import NamedTuple, Protocol

from aiohttp import web

from featurestream.http import body as bodies
from featurestream.http.limits import Limits
from featurestream.http.protocol import Handler, Response


class Answer(NamedTuple):
    """What goes back: ``headers`` are the ones besides Content-Type, Content-Length and Date, which every
    lane writes; ``close``: close the connection after it (what remains of the request cannot be trusted)."""

    status: int
    body: bytes
    content_type: str
    headers: tuple[tuple[str, str], ...] = ()
    close: bool = False

    def response(self) -> web.Response:
        """The answer as aiohttp's response (the aiohttp lane)."""
        response = Response(body=self.body, status=self.status,
                            headers={**dict(self.headers), "Content-Type": self.content_type})
        if self.close:
            response.force_close()
        return response


class Incoming(Protocol):
    """One request: its head is read; its body is read by :meth:`body`, within the server's limits."""

    method: str
    raw_path: str  # the request target as sent: path and query, not decoded

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (any case), None when it was not sent."""

    def header_pairs(self) -> list[tuple[str, str]]:
        """Every header as sent, in order (names in the case sent), decoded as Latin-1."""

    def declared_size(self, limits: Limits) -> int:
        """The bytes the body may take (see ``body.declared_size``)."""

    async def body(self, limits: Limits) -> bytes:
        """The whole body, or ApiError (413, 408, 417, 400) or ``body.ClientClosed``."""

    def gone(self) -> bool:
        """True once the client's connection is closed (nobody left to answer)."""


Answerer = Callable[[Incoming], Awaitable[Answer]]


class AiohttpIncoming:
    """An aiohttp request as :class:`Incoming` (``body.py`` bounds its body)."""

    __slots__ = ("_request", "method", "raw_path")

    def __init__(self, request: web.BaseRequest) -> None:
        self._request = request
        self.method = request.method
        self.raw_path = request.raw_path

    def header(self, name: str) -> str | None:
        return self._request.headers.get(name)

    def header_pairs(self) -> list[tuple[str, str]]:
        return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in self._request.raw_headers]

    def declared_size(self, limits: Limits) -> int:
        return bodies.declared_size(self._request, limits)

    async def body(self, limits: Limits) -> bytes:
        return await bodies.read_body(self._request, limits)

    def gone(self) -> bool:
        return bodies.client_gone(self._request)


def aiohttp_handler(answer: Answerer) -> Handler:
    """``answer`` as a handler for aiohttp's low-level server (``protocol.aws_server``)."""

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        return (await answer(AiohttpIncoming(request))).response()

    return handle


__all__ = ["AiohttpIncoming", "Answer", "Answerer", "Incoming", "aiohttp_handler"]
