"""Serving one handler on a listening socket: the fast lane in front, aiohttp's server behind it.

Every connection starts in the fast lane (``fast_lane.py``), which answers the plain requests the SDKs
send; a connection with any other request is handed to aiohttp's low-level server (``protocol.aws_server``)
for good. Both lanes call the same ``answer`` (``incoming.py``). ``fast_lane=False`` serves everything
through aiohttp, as before the fast lane (``featurestream serve --no-fast-lane``: to tell a fast-lane
problem from another).
"""

from __future__ import annotations

import asyncio
import signal
import socket
from collections.abc import Awaitable, Callable
from typing import Any

from featurestream.http.fast_lane import FastLane
from featurestream.http.incoming import Answerer, aiohttp_handler
from featurestream.http.protocol import aws_server

EVENT_LOOPS = ("uvloop", "asyncio")


def run(answer: Answerer, sock: socket.socket, *, client_max_size: int, shutdown_timeout: float,
        event_loop: str = "uvloop", fast_lane: bool = True, on_hand_over: Callable[[], None] | None = None,
        on_startup: Callable[[], Awaitable[None]] | None = None,
        on_cleanup: Callable[[], Awaitable[None]] | None = None, **options: Any) -> None:
    """Serve ``answer`` on ``sock`` until SIGTERM or SIGINT (blocking). ``on_startup`` runs in the loop before
    the first connection is accepted, ``on_cleanup`` after the last is closed, ``on_hand_over`` each time
    the fast lane gives a connection to aiohttp's server. ``client_max_size`` bounds every body, in both
    lanes; ``options`` are aiohttp's RequestHandler options (``protocol.aws_server``).

    ``event_loop``: uvloop (the default) or asyncio's own. Measured on this 2-core machine with wrk at 8
    connections against one worker answering GetRecord: uvloop served 1,343-1,569 requests/s at 632-726
    CPU-µs each, asyncio's loop 870-1,277 at 750-938 (runs alternated). Every aiohttp and redis-py
    call runs the same on both; ``--event-loop asyncio`` is there to tell a loop problem from ours."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        fallback = aws_server(aiohttp_handler(answer), client_max_size=client_max_size, **options)
        lane = FastLane(answer, fallback, max_body=client_max_size, on_hand_over=on_hand_over) if fast_lane else None
        stop = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        listener: asyncio.AbstractServer | None = None
        try:
            if on_startup is not None:
                await on_startup()
            listener = await loop.create_server(lane if lane is not None else fallback, sock=sock)
            await stop.wait()
        finally:
            if listener is not None:
                listener.close()
            # As aiohttp's runner: let requests that arrived before the close start, then close the idle
            # connections and wait up to shutdown_timeout for the answers being made.
            await asyncio.sleep(0)
            fallback.pre_shutdown()
            if lane is not None:
                await lane.shutdown(shutdown_timeout)
            await fallback.shutdown(shutdown_timeout)
            if on_cleanup is not None:
                await on_cleanup()

    if event_loop == "uvloop":
        import uvloop

        uvloop.run(main())
    elif event_loop == "asyncio":
        asyncio.run(main())
    else:
        raise ValueError(f"event_loop must be one of {', '.join(EVENT_LOOPS)}; got {event_loop!r}")


__all__ = ["EVENT_LOOPS", "run"]
