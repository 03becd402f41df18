"""The HTTP floor for bench/http_api.py: `featurestream serve`'s HTTP stack answering with no work at all.

The same shape as the real server: one listening socket shared by forked workers
(``featurestream.http.server.open_socket``), each serving an aiohttp application on uvloop through
``featurestream.http.protocol.run``. Every request's body is read and a fixed answer goes back: no
signature check, no JSON, no validation, no Redis, no Kafka, no metrics. Driven by wrk with the very
requests the real server gets, its requests/s is the most any handler on this stack could serve on this
machine, and its CPU per request is the stack's share of what the real server spends.

  .venv/bin/python bench/http_floor.py --port P [--workers 2]

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

from aiohttp import web

from featurestream.http.protocol import run
from featurestream.http.server import open_socket, supervise

# wrk counts a GetRecord answer without "Record" as an error (bench/wrk_load.py): answer with one.
GET_ANSWER = b'{"Record":[{"FeatureName":"customer_id","ValueAsString":"c0"}]}'


async def answer(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(body=GET_ANSWER if request.method == "GET" else b"{}", content_type="application/json")


def app() -> web.Application:
    application = web.Application()
    application.router.add_route("*", "/{tail:.*}", answer)
    return application


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    sock = open_socket("127.0.0.1", args.port)
    # The server's own supervisor: the same forked workers, stopped and replaced the same way.
    supervise(args.workers, lambda: run(app(), sock, shutdown_timeout=1.0, access_log=None),
              lambda message: print(message, file=sys.stderr, flush=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
