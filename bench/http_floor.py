"""The HTTP floor for bench/http_api.py: `featurestream serve`'s HTTP stack answering with no work at all.

The same shape as the real server: one listening socket shared by forked workers
(``featurestream.http.server.open_socket``), each serving one handler through the fast lane, with aiohttp's
low-level server behind it, on uvloop (``featurestream.http.listen.run``). Every request's body is read and a
fixed answer goes back: no signature check, no JSON, no validation, no Redis, no Kafka, no metrics. Driven by
wrk with the very requests the real server gets, its requests/s is the most any handler on this stack could
serve on this machine, and its CPU per request is the stack's share of what the real server spends.

``--produce-topic T --bootstrap B``: a PutRecord floor that keeps the one promise a put makes. Each PUT's
body is produced to Kafka topic ``T`` as one record, by the server's own producer (``Publisher.try_produce``,
idempotent, ``acks=all``, linger 0) with its delivery reports resolved on the event loop as the server
resolves them (``featurestream.http.delivery``), and the answer goes back only once the broker acknowledged
it. Still no signature, JSON, validation or metrics: the most an acknowledged write could serve here.

  .venv/bin/python bench/http_floor.py --port P [--workers 2] [--produce-topic T --bootstrap B]

Serves until SIGTERM or SIGINT, supervised as `serve`'s workers are (featurestream.http.server.supervise).
"""

# ruff: noqa: E402  (the sys.path fix below must run before the imports)
from __future__ import annotations

import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

import argparse
import asyncio
import itertools
import socket

from featurestream.http.delivery import LoopDeliveries
from featurestream.http.incoming import Answer, Incoming
from featurestream.http.limits import Limits
from featurestream.http.listen import run
from featurestream.http.server import open_socket, supervise
from streams.publisher import REPORT_GRACE_S, Publisher

# wrk counts a GetRecord answer without "Record" as an error (bench/wrk_load.py): answer with one.
GET_ANSWER = b'{"Record":[{"FeatureName":"customer_id","ValueAsString":"c0"}]}'


LIMITS = Limits(max_body_bytes=1 << 20)


async def answer(request: Incoming) -> Answer:
    await request.body(LIMITS)
    return Answer(200, GET_ANSWER if request.method == "GET" else b"{}", "application/json")


class ProduceFloor:
    """Every PUT's body produced to ``topic``, answered once acknowledged; anything else as ``answer``.
    Built in the worker, after the fork: a Kafka client's threads do not survive one."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.publisher = Publisher(bootstrap)
        self.publisher.check_topic(topic)
        self.topic = topic
        self.counter = itertools.count()
        self.deliveries: LoopDeliveries | None = None

    async def start(self) -> None:
        # The worker's own loop, and the server's bound on a report that never comes (runtime._acked).
        self.deliveries = LoopDeliveries(asyncio.get_running_loop(), self.publisher.timeout_s + REPORT_GRACE_S)

    async def close(self) -> None:
        self.publisher.close(5.0)

    async def handle(self, request: Incoming) -> Answer:
        if request.method != "PUT" or self.deliveries is None:
            return await answer(request)
        body = await request.body(LIMITS)
        future, on_delivery = self.deliveries.expect()
        key = b"%d" % next(self.counter)  # keys spread over the partitions, as customer ids do
        while not self.publisher.try_produce(self.topic, key, body, None, on_delivery):
            await asyncio.sleep(0.001)  # the producer's queue is full: only under a load wrk cannot make
        await future
        return Answer(200, b"{}", "application/json")


def serve_worker(sock: socket.socket, produce: tuple[str, str] | None, fast_lane: bool) -> None:
    """One worker, served as the server's are (listen.run: the fast lane, aiohttp's low-level server behind
    it, on uvloop)."""
    if produce is None:
        run(answer, sock, client_max_size=LIMITS.max_body_bytes, shutdown_timeout=1.0, fast_lane=fast_lane,
            access_log=None)
        return
    floor = ProduceFloor(*produce)
    run(floor.handle, sock, client_max_size=LIMITS.max_body_bytes, shutdown_timeout=1.0, fast_lane=fast_lane,
        on_startup=floor.start, on_cleanup=floor.close, access_log=None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--produce-topic", help="produce each PUT's body to this topic and answer once acknowledged")
    parser.add_argument("--bootstrap", help="the Kafka bootstrap servers for --produce-topic")
    parser.add_argument("--no-fast-lane", dest="fast_lane", action="store_false",
                        help="every request through aiohttp's server (as `serve --no-fast-lane`)")
    args = parser.parse_args(argv)
    if bool(args.produce_topic) != bool(args.bootstrap):
        parser.error("--produce-topic and --bootstrap go together")

    produce = (args.bootstrap, args.produce_topic) if args.produce_topic else None
    sock = open_socket("127.0.0.1", args.port)
    # The server's own supervisor: the same forked workers, stopped and replaced the same way.
    supervise(args.workers, lambda: serve_worker(sock, produce, args.fast_lane),
              lambda message: print(message, file=sys.stderr, flush=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
