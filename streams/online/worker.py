"""The online processor's main: ``featurestream process`` runs :func:`run_processor`.

Two engines consume: "confluent" (default: ``engine.py``, the offline sink's consume-and-commit
loop driving the apply step in-process) and "faust" (``faust_app.py``, with the apply step in a
child process, ``apply_child.py``, so that faust and the apply step each get a core, or in a
thread with ``apply_in_thread``). The worker also starts the healer that rebuilds the online
store when Redis loses it (``healer.py``), and serves /metrics, /health and /ready.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from sinks.online.epoch import EpochMarker
from streams.group_view import GroupView
from streams.health import WorkerHealth
from streams.kafka_client import KafkaTarget
from streams.lag import committed_offsets
from streams.metrics_server import serve_metrics
from streams.online.aggregate_step import online_input_groups
from streams.online.applier import ApplySummary, make_online_applier
from streams.online.engine import FETCH_WAIT_MS, online_group_id, run_engine
from streams.online.healer import OnlineHealer
from streams.registry import Registry
from streams.route import RawMessage

ENGINES = ("confluent", "faust")


def run_processor(bootstrap: KafkaTarget, redis_url: str, prefix: str, *, engine: str = "confluent",
                  offline_uri: str | None = None, metrics_port: int | None = None, metrics_host: str = "127.0.0.1",
                  on_metrics_port: Callable[[int], None] | None = None, batch_size: int = 1000,
                  batch_within_s: float = 0.005, apply_in_thread: bool = False, log_level: str = "info",
                  heal_every_s: float = 2.0, fetch_wait_ms: int = FETCH_WAIT_MS) -> None:
    """Run the online processor until interrupted, with ``engine`` "confluent" (engine.py) or
    "faust" (faust_app.py). Offsets are committed only after Redis has applied their records.

    ``metrics_port`` serves /metrics, /health and /ready (a free port if it is taken; the one
    bound is passed to ``on_metrics_port``).
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}; got {engine!r}")
    registry = Registry(bootstrap, prefix=prefix, offline_base_uri=offline_uri)
    groups = GroupView(registry.refresh)
    health = WorkerHealth()
    if metrics_port:
        server = serve_metrics(metrics_port, metrics_host, ready=health.readiness, role="online processor")
        if on_metrics_port is not None:
            on_metrics_port(server.port)
    # The healer's rebuild applies through an applier of its own, beside the live apply step.
    rebuild_applier = make_online_applier(bootstrap, redis_url, prefix, offline_uri=offline_uri,
                                          stage="rebuild-online")

    def live_path_replays_all() -> bool:
        topics = [registry.topic_of(g) for g in online_input_groups(groups.all())]
        return not committed_offsets(bootstrap, online_group_id(prefix), topics)

    healer = OnlineHealer(EpochMarker(rebuild_applier.store.client, prefix), groups, bootstrap, registry.topic_of,
                          rebuild_applier, check_every_s=heal_every_s, live_path_replays_all=live_path_replays_all)
    healer.start()
    try:
        if engine == "confluent":
            logging.basicConfig(level=log_level.upper(), format="[%(asctime)s] [%(process)d] [%(levelname)s] "
                                "%(name)s: %(message)s")
            applier = make_online_applier(bootstrap, redis_url, prefix, offline_uri=offline_uri)
            run_engine(bootstrap, prefix, applier, batch_size=batch_size, health=health, fetch_wait_ms=fetch_wait_ms)
        else:
            _run_faust(bootstrap, redis_url, prefix, registry, groups, health, offline_uri=offline_uri,
                       batch_size=batch_size, batch_within_s=batch_within_s, apply_in_thread=apply_in_thread,
                       log_level=log_level)
    finally:
        healer.stop()


def _run_faust(bootstrap: KafkaTarget, redis_url: str, prefix: str, registry: Registry, groups: GroupView,
               health: WorkerHealth, *, offline_uri: str | None, batch_size: int, batch_within_s: float,
               apply_in_thread: bool, log_level: str) -> None:
    import faust

    from streams.online.faust_app import build_online_app

    if apply_in_thread:
        applier = make_online_applier(bootstrap, redis_url, prefix, offline_uri=offline_uri)

        async def apply_batch(batch: Sequence[RawMessage]) -> ApplySummary:
            return await asyncio.get_running_loop().run_in_executor(None, applier, batch)
    else:
        from streams.online.apply_child import ApplierProcess

        apply_batch = ApplierProcess(bootstrap, redis_url, prefix, offline_uri=offline_uri)

    def list_topics() -> list[str]:
        # fresh: called every few seconds by the app's registry watcher, and at once when the
        # registry topic shows a change, so the view must catch up before answering.
        return [registry.topic_of(g) for g in online_input_groups(groups.all(fresh=True))]

    app = build_online_app(bootstrap=bootstrap, prefix=prefix, apply_batch=apply_batch, list_topics=list_topics,
                           batch_size=batch_size, batch_within_s=batch_within_s, health=health)
    worker = faust.Worker(app, loglevel=log_level, quiet=True)
    try:
        worker.execute_from_commandline()
    finally:
        close = getattr(apply_batch, "close", None)
        if close is not None:
            close()
