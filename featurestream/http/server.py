"""Run the HTTP API: one listening socket shared by ``workers`` forked processes.

Each worker is a full asyncio server (aiohttp) with its own Kafka producer, registry reader
and Redis pool; the kernel spreads connections over the workers, so both cores serve
requests. The parent only supervises: a worker that dies is replaced, SIGTERM/SIGINT stop all,
and a parent killed outright takes its workers with it (``parent_death.py``).
"""

from __future__ import annotations

import gc
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Mapping

from featurestream.config import Config
from featurestream.http.credentials import AccessKey
from featurestream.http.limits import Limits
from featurestream.http.parent_death import die_with_parent

RESTART_BACKOFF_S = 1.0


def open_socket(host: str, port: int, backlog: int = 1024) -> socket.socket:
    sock = socket.create_server((host, port), backlog=backlog)
    sock.set_inheritable(True)
    return sock


def _enable_multiprocess_metrics(directory: str) -> None:
    # prometheus_client decides where values live from this variable (its only switch) and
    # a module global; both are set here, in the worker, before any metric is created.
    from prometheus_client import values

    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    values.ValueClass = values.MultiProcessValue()


def run_worker(config: Config, sock: socket.socket, *, credentials: Mapping[str, AccessKey] | None, threads: int,
               limits: Limits, metrics_dir: str | None = None, regions: frozenset[str] | None = None,
               event_loop: str = "uvloop", fast_lane: bool = True) -> None:
    """Serve on ``sock`` until SIGTERM/SIGINT (blocking)."""
    if metrics_dir:
        _enable_multiprocess_metrics(metrics_dir)
    import asyncio

    from featurestream.http.app import HANDLER_OPTIONS, Server
    from featurestream.http.listen import run
    from featurestream.http.metrics import HttpMetrics
    from featurestream.sdk import FeatureStore

    server = Server(FeatureStore(config, redis_timeout_s=limits.redis_timeout_s), credentials=credentials,
                    limits=limits, threads=threads, metrics=HttpMetrics(metrics_dir), regions=regions)

    async def _warm_up() -> None:
        # Connect to Kafka and Redis now, not on the first request (which would wait ~100 ms).
        loop = asyncio.get_running_loop()

        def touch() -> None:
            for check in (server.check_kafka, server.check_redis, lambda: server.store.publisher):
                try:
                    check()
                except Exception:  # /ready reports it; requests report it as ServiceUnavailable
                    pass

        loop.run_in_executor(server.executor, touch)
        server.doors.athena_api.start_warm_up()  # the query engine, off the request threads
        freeze_startup_objects()

    run(server.answer, sock, client_max_size=limits.max_body_bytes, shutdown_timeout=5.0, event_loop=event_loop,
        fast_lane=fast_lane, on_hand_over=server.metrics.connection_handed_over, on_startup=_warm_up,
        on_cleanup=server.aclose, **HANDLER_OPTIONS)


def freeze_startup_objects() -> None:
    """Keep the objects made while the worker started out of every later garbage collection.

    A worker imports pyiceberg, DuckDB, pandas, boto and more: hundreds of thousands of long-lived objects
    that each full collection walked, holding the event loop for it. Under 7k puts/s on one worker, with
    wrk at 8 connections, PutRecord's p99 was 30-31 ms with collections on and 3-5 ms with them off
    (alternating runs, 2026-12-05); ``gc.freeze`` moves what exists now to a generation no collection
    visits (objects made later are collected as before)."""
    gc.collect()
    gc.freeze()


def serve(config: Config, *, host: str, port: int, credentials: Mapping[str, AccessKey] | None, workers: int = 2,
          threads: int = 32, limits: Limits | None = None, regions: frozenset[str] | None = None,
          event_loop: str = "uvloop", fast_lane: bool = True,
          announce: Callable[[str], None] = lambda m: print(m, file=sys.stderr, flush=True)) -> int:
    """Bind ``host:port``, start ``workers`` processes, supervise them; returns the exit status."""
    limits = limits or Limits()
    sock = open_socket(host, port)
    bound = sock.getsockname()[1]
    auth = "SigV4 authentication ON" if credentials is not None else "AUTHENTICATION OFF"
    if credentials is not None and regions is not None:
        auth += f" for {', '.join(sorted(regions))}"
    announce(f"featurestream: serving the SageMaker Feature Store API on http://{host}:{bound} "
             f"({workers} worker{'s' if workers > 1 else ''}, {auth})")
    if workers <= 1:
        run_worker(config, sock, credentials=credentials, threads=threads, limits=limits, regions=regions,
                   event_loop=event_loop, fast_lane=fast_lane)
        return 0
    metrics_dir = tempfile.mkdtemp(prefix="featurestream-http-metrics-")
    try:
        supervise(workers, lambda: run_worker(config, sock, credentials=credentials, threads=threads, limits=limits,
                                              metrics_dir=metrics_dir, regions=regions, event_loop=event_loop,
                                              fast_lane=fast_lane),
                  announce)
    finally:
        sock.close()
        shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0


def supervise(workers: int, run_one: Callable[[], None], announce: Callable[[str], None]) -> None:
    """Fork ``workers`` processes that each call ``run_one`` (serving a socket opened before the fork),
    replace a worker that dies, and return once SIGTERM/SIGINT stopped them all."""
    children: dict[int, int] = {}
    stopping = False

    parent = os.getpid()

    def spawn(slot: int) -> None:
        pid = os.fork()
        if pid == 0:  # child
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            die_with_parent(parent)  # a parent killed with kill -9 leaves no worker serving
            status = 0
            try:
                run_one()
            except BaseException:  # noqa: B036 - a worker must never return into the parent's code
                import traceback

                traceback.print_exc()
                status = 1
            os._exit(status)
        children[pid] = slot

    def stop(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for pid in list(children):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for slot in range(workers):
        spawn(slot)
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        except InterruptedError:
            continue
        slot = children.pop(pid, None)
        if slot is None or stopping:
            continue
        announce(f"featurestream: worker {pid} exited (status {os.waitstatus_to_exitcode(status)}); "
                 "starting a new one")
        time.sleep(RESTART_BACKOFF_S)
        spawn(slot)
