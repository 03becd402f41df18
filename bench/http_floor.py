"""The HTTP floor for bench/http_api.py: `featurestream serve`'s HTTP stack answering with no work at all.

The same shape as the real server: one listening socket shared by forked workers
(``featurestream.http.server.open_socket``), each serving an aiohttp application on uvloop through
``featurestream.http.protocol.run``. Every request's body is read and a fixed answer goes back: no
signature check, no JSON, no validation, no Redis, no Kafka, no metrics. Driven by wrk with the very
requests the real server gets, its requests/s is the most any handler on this stack could serve on this
machine, and its CPU per request is the stack's share of what the real server spends.

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

from aiohttp import web

from featurestream.http.delivery import LoopDeliveries
from featurestream.http.protocol import run
from featurestream.http.server import open_socket, supervise
from streams.publisher import REPORT_GRACE_S, Publisher

# wrk counts a GetRecord answer without "Record" as an error (bench/wrk_load.py): answer with one.
GET_ANSWER = b'{"Record":[{"FeatureName":"customer_id","ValueAsString":"c0"}]}'


async def answer(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(body=GET_ANSWER if request.method == "GET" else b"{}", content_type="application/json")


def app() -> web.Application:
    application = web.Application()
    application.router.add_route("*", "/{tail:.*}", answer)
    return application


def produce_app(bootstrap: str, topic: str) -> web.Application:
    """Every PUT's body produced to ``topic``, answered once acknowledged; anything else as ``answer``.
    Built in the worker, after the fork: a Kafka client's threads do not survive one."""
    publisher = Publisher(bootstrap)
    publisher.check_topic(topic)
    counter = itertools.count()
    deliveries = web.AppKey("deliveries", LoopDeliveries)

    async def put(request: web.Request) -> web.Response:
        body = await request.read()
        future, on_delivery = request.app[deliveries].expect()
        key = b"%d" % next(counter)  # keys spread over the partitions, as customer ids do
        while not publisher.try_produce(topic, key, body, None, on_delivery):
            await asyncio.sleep(0.001)  # the producer's queue is full: only under a load wrk cannot make
        await future
        return web.Response(body=b"{}", content_type="application/json")

    async def start(application: web.Application) -> None:
        # The worker's own loop, and the server's bound on a report that never comes (runtime._acked).
        application[deliveries] = LoopDeliveries(asyncio.get_running_loop(), publisher.timeout_s + REPORT_GRACE_S)

    async def close(_app: web.Application) -> None:
        publisher.close(5.0)

    application = web.Application()
    application.on_startup.append(start)
    application.router.add_route("PUT", "/{tail:.*}", put)
    application.router.add_route("*", "/{tail:.*}", answer)
    application.on_cleanup.append(close)
    return application


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--produce-topic", help="produce each PUT's body to this topic and answer once acknowledged")
    parser.add_argument("--bootstrap", help="the Kafka bootstrap servers for --produce-topic")
    args = parser.parse_args(argv)
    if bool(args.produce_topic) != bool(args.bootstrap):
        parser.error("--produce-topic and --bootstrap go together")

    def application() -> web.Application:
        return produce_app(args.bootstrap, args.produce_topic) if args.produce_topic else app()

    sock = open_socket("127.0.0.1", args.port)
    # The server's own supervisor: the same forked workers, stopped and replaced the same way.
    supervise(args.workers, lambda: run(application(), sock, shutdown_timeout=1.0, access_log=None),
              lambda message: print(message, file=sys.stderr, flush=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
