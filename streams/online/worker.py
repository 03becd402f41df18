"""The online processor's main: ``featurestream process`` runs :func:`run_processor`.

It wires the faust app (``faust_app.py``) to the apply step, which runs in a child process
(``apply_child.py``) so that faust and the apply step each get a core, or in a thread
(``apply_in_thread``: one core, less memory), and serves the Prometheus metrics.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from streams.group_view import GroupView
from streams.health import WorkerHealth
from streams.metrics_server import serve_metrics
from streams.online.applier import ApplySummary, make_online_applier
from streams.registry import Registry
from streams.route import RawMessage


def run_processor(bootstrap: str, redis_url: str, prefix: str, *, offline_uri: str | None = None,
                  metrics_port: int | None = None, metrics_host: str = "127.0.0.1",
                  on_metrics_port: Callable[[int], None] | None = None, batch_size: int = 1000,
                  batch_within_s: float = 0.005, apply_in_thread: bool = False, log_level: str = "info") -> None:
    """Run the faust online processor until interrupted.

    Offsets are acknowledged only after Redis has applied their batch (see faust_app.py).
    ``metrics_port`` serves /metrics, /health and /ready (a free port if it is taken; the one
    bound is passed to ``on_metrics_port``).
    """
    import faust

    from streams.online.faust_app import build_online_app

    registry = Registry(bootstrap, prefix=prefix, offline_base_uri=offline_uri)
    groups = GroupView(registry.refresh)
    if apply_in_thread:
        applier = make_online_applier(bootstrap, redis_url, prefix, offline_uri=offline_uri)

        async def apply_batch(batch: Sequence[RawMessage]) -> ApplySummary:
            return await asyncio.get_running_loop().run_in_executor(None, applier, batch)
    else:
        from streams.online.apply_child import ApplierProcess

        apply_batch = ApplierProcess(bootstrap, redis_url, prefix, offline_uri=offline_uri)
    health = WorkerHealth()
    if metrics_port:
        server = serve_metrics(metrics_port, metrics_host, ready=health.readiness, role="online processor")
        if on_metrics_port is not None:
            on_metrics_port(server.port)

    def list_topics() -> list[str]:
        # fresh: called every few seconds by the app's registry watcher, and at once when the
        # registry topic shows a change, so the view must catch up before answering.
        return [registry.topic_of(g.name) for g in groups.all(fresh=True).values() if g.online_enabled]

    app = build_online_app(bootstrap=bootstrap, prefix=prefix, apply_batch=apply_batch, list_topics=list_topics,
                           batch_size=batch_size, batch_within_s=batch_within_s, health=health)
    worker = faust.Worker(app, loglevel=log_level, quiet=True)
    try:
        worker.execute_from_commandline()
    finally:
        close = getattr(apply_batch, "close", None)
        if close is not None:
            close()
