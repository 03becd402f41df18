"""The online stream processor: a faust-streaming app (consumer group ``<prefix>-online``).

It consumes every feature group's topic and hands batches to a callback (the front door
wires it to the Redis online store). Decisions that matter for correctness:

- **Batches, acknowledged after they are applied.** The agent reads events one by one
  (``stream.events()``), and faust acks each one when the loop asks for the next, which is
  too early for a pipeline that collects batch N+1 while batch N is applied. So every message
  gets an extra reference (``Message.incref``) as it arrives, and the apply task drops it only
  after Redis has applied its batch; faust commits (every ``broker_commit_interval``) only
  offsets whose references are all gone, so offsets never pass a record Redis has not
  applied. A failing Redis is retried with backoff until it answers (at-least-once; the
  atomic write-if-newer rule makes redelivery harmless). At most one batch applies at a time.
- **Concurrency 1.** faust can commit past in-flight events with higher agent concurrency
  (faust-streaming #606, unfixed); parallelism comes from more processes in the group.
- **New groups without a restart.** faust's pattern subscription does not work with the
  aiokafka driver ("XXX pattern does not work" in faust's source), so the processor watches
  the registry and appends new group topics to the agent's channel, then asks faust's topic
  conductor to resubscribe. The registry topic itself is always subscribed, so the channel is
  never empty and a registry change wakes the processor at once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import tempfile
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import faust

from schemas.backoff import backoff_delays
from schemas.names import registry_topic
from streams.client_id import worker_client_id
from streams.gc_tuning import settle_heap
from streams.health import WorkerHealth
from streams.kafka_client import KafkaTarget, connection
from streams.online import faust_adapter
from streams.online.faust_auth import faust_credentials
from streams.route import RawMessage

log = logging.getLogger("featurestream.processor")

# Applies one batch and returns once Redis has it (or raises: the batch is retried).
ApplyBatch = Callable[[list[RawMessage]], Awaitable[Any]]
ListTopics = Callable[[], Iterable[str]]


def faust_datadir(app_id: str) -> str:
    """faust's own state directory for app ``app_id``. faust's default, ``<app id>-data`` in the working
    directory, left an empty ``<prefix>-online-data/v1/tables`` wherever a processor was started (its tables
    live in memory here, ``store="memory://"``, so nothing else is written there): it goes under the
    system's temporary directory instead, one per app id, reused by every run. Directly in it: faust makes
    the directory, and the two below it, one level at a time (``mkdir`` without parents)."""
    return os.path.join(tempfile.gettempdir(), f"featurestream-faust-{app_id}")


def build_online_app(*, bootstrap: KafkaTarget, prefix: str, apply_batch: ApplyBatch, list_topics: ListTopics,
                     app_id: str | None = None, batch_size: int = 1000, batch_within_s: float = 0.005,
                     registry_poll_s: float = 2.0, commit_interval_s: float = 1.0,
                     retry_backoff_s: float = 0.5, session_timeout_s: float = 10.0,
                     health: WorkerHealth | None = None) -> faust.App:
    """Build the faust app. ``apply_batch`` is awaited once per batch, one batch at a time;
    ``list_topics`` returns the group topics to consume (called in a thread at start and every
    ``registry_poll_s``). ``health`` learns of rebalances, loop passes and apply failures
    (what ``/ready`` reports)."""
    faust_adapter.require_compat()  # a faust upgrade that broke the adapter stops here, by name
    kafka = connection(bootstrap)
    health = health or WorkerHealth()
    app = faust.App(
        app_id or f"{prefix}-online",
        broker=[f"kafka://{server}" for server in kafka.servers],
        # TLS and SASL as every confluent-kafka client has them (aiokafka takes faust's credentials)
        broker_credentials=faust_credentials(kafka.security),
        value_serializer="raw",
        key_serializer="raw",
        store="memory://",
        datadir=faust_datadir(app_id or f"{prefix}-online"),
        web_enabled=False,  # metrics are served by featurestream's own Prometheus endpoint
        broker_commit_interval=commit_interval_s,
        consumer_auto_offset_reset="earliest",  # a new group's first records must not be skipped
        topic_replication_factor=1,
        topic_partitions=1,
        producer_acks=-1,
        stream_wait_empty=False,
        # A processor killed with -9 holds its partitions until the broker gives up on it:
        # faust's 60 s default would stall those partitions for a minute after a crash.
        broker_session_timeout=session_timeout_s,
        broker_heartbeat_interval=max(0.5, session_timeout_s / 10),
        broker_rebalance_timeout=max(20.0, session_timeout_s * 2),
        # Names this worker in the group's member list (streams/client_id.py; `featurestream status`),
        # instead of faust's "faust-<version>" shared by every processor.
        broker_client_id=worker_client_id("processor"),
    )
    # Before anything touches app.topics: the conductor binds to the transport's consumer.
    faust_adapter.install(app)
    faust_adapter.set_resubscribe_delay(app, 0.5)

    reg_topic = registry_topic(prefix)
    channel = app.topic(reg_topic, value_serializer="raw", key_serializer="raw")
    subscribed: set[str] = {reg_topic}
    topic_re = re.compile(rf"^{re.escape(prefix)}\.[A-Za-z0-9]")
    loop_state: dict[str, Any] = {"refresh_now": asyncio.Event(), "drift": None}

    async def sync_subscription() -> None:
        try:
            topics = await asyncio.get_running_loop().run_in_executor(None, lambda: set(list_topics()))
        except Exception as exc:  # registry briefly unreachable: keep consuming what we have
            log.warning("could not refresh the feature-group list: %s", exc)
            return
        wanted = {t for t in topics if topic_re.match(t)} | {reg_topic}
        new, gone = sorted(wanted - subscribed), sorted(subscribed - wanted)
        if new or gone:
            # A deleted group's topic must leave the subscription before Kafka deletes it:
            # aiokafka crashes faust's fetcher on partitions that vanish while assigned.
            if new:
                log.info("subscribing to new feature group topics: %s", ", ".join(new))
            if gone:
                log.info("unsubscribing from deleted feature group topics: %s", ", ".join(gone))
            subscribed.clear()
            subscribed.update(wanted)
            # The agent iterates a clone of ``channel`` (faust clones channels per agent), so
            # update every registered channel that carries our subscription.
            for chan in list(app.topics):
                if reg_topic in getattr(chan, "topics", ()):
                    chan.topics = sorted(subscribed)
            faust_adapter.resubscribe(app)
            loop_state["drift"] = None
            return
        if app.rebalancing:
            return
        # faust drops a change flagged during a rebalance: compare with what aiokafka is subscribed to.
        # Only a drift seen at two polls in a row is acted on: a change just flagged takes the
        # conductor's delay to reach aiokafka.
        drift = faust_adapter.subscription_drift(
            wanted, faust_adapter.subscribed_topics(app), lambda t: t == reg_topic or bool(topic_re.match(t)))
        seen_before, loop_state["drift"] = loop_state["drift"], drift
        missing, extra = drift
        if (missing or extra) and drift == seen_before:
            loop_state["drift"] = None
            log.warning("the subscription is not what was asked (faust drops a change made during a rebalance): "
                        "missing %s, still subscribed %s; asking again", missing or "none", extra or "none")
            faust_adapter.resubscribe(app)

    @app.on_partitions_assigned.connect
    async def _assigned(_app: Any, assigned: set[Any], **_: Any) -> None:
        health.joined(len(assigned))

    @app.on_partitions_revoked.connect
    async def _revoked(_app: Any, revoked: set[Any], **_: Any) -> None:
        health.left()  # aiokafka rebalances eagerly: the next assignment follows

    @app.task
    async def watch_registry() -> None:
        await sync_subscription()
        settle_heap()  # start-up is done: keep GC passes over long-lived objects off the hot path
        event = loop_state["refresh_now"]
        while True:
            health.beat()  # at least every registry_poll_s while the event loop turns
            try:
                await asyncio.wait_for(event.wait(), timeout=registry_poll_s)
            except TimeoutError:
                pass
            event.clear()
            await sync_subscription()

    @app.agent(channel, concurrency=1)
    async def online(stream: faust.StreamT) -> None:
        # Greedy batching: events collect in ``pending`` while the previous batch is applied;
        # as soon as the applier is free it takes everything collected (up to batch_size). Under
        # load batches grow by themselves, when idle a record is applied at once (after at most
        # batch_within_s of lingering), and faust never stops consuming while Redis works.
        # faust acks an event when the loop asks for the next one, too early for this: each
        # message gets an extra reference (Message.incref) here, dropped only after Redis has
        # applied it, and faust commits only offsets whose references are all gone.
        pending: list[tuple[RawMessage, Any]] = []
        more = asyncio.Event()
        room = asyncio.Event()
        room.set()
        applier = asyncio.create_task(_apply_pending(pending, more, room, apply_batch, batch_size,
                                                     batch_within_s, retry_backoff_s, health))
        try:
            async for ev in stream.events():
                m = ev.message
                if m.topic == reg_topic:
                    loop_state["refresh_now"].set()
                    continue
                m.incref()
                pending.append((RawMessage(m.topic, m.partition, m.offset, m.key, m.value,
                                           list(m.headers or ()), int((m.timestamp or 0) * 1000)), ev))
                more.set()
                if len(pending) >= 4 * batch_size:  # backpressure: Redis is slower than Kafka
                    room.clear()
                    waiter = asyncio.ensure_future(room.wait())
                    await asyncio.wait([applier, waiter], return_when=asyncio.FIRST_COMPLETED)
                    waiter.cancel()
                if applier.done():
                    applier.result()  # it only ends by a bug: crash loudly rather than stall
        finally:
            applier.cancel()

    return app


async def _apply_pending(pending: list[tuple[RawMessage, Any]], more: asyncio.Event, room: asyncio.Event,
                         apply_batch: ApplyBatch, batch_size: int, linger_s: float, backoff_s: float,
                         health: WorkerHealth) -> None:
    """Apply what the agent collected, oldest first, one batch at a time; then release its acks."""
    while True:
        await more.wait()
        if len(pending) < batch_size and linger_s > 0:
            await asyncio.sleep(linger_s)  # let a trickle become a batch
        taken = pending[:batch_size]
        del pending[:batch_size]
        if not pending:
            more.clear()
        if len(pending) < 4 * batch_size:
            room.set()
        await _apply_until_done(apply_batch, [raw for raw, _ in taken], backoff_s, health)
        for _, ev in taken:
            ev.ack()  # drops the agent's reference: now the offset may be committed


async def _apply_until_done(apply_batch: ApplyBatch, batch: list[RawMessage], backoff_s: float,
                            health: WorkerHealth) -> None:
    """Retry forever on failure (see module docstring): Redis down is waited out, not skipped."""
    delays = backoff_delays(backoff_s, 10.0)  # the first wait may exceed the cap; the next ones do not
    while True:
        try:
            await apply_batch(batch)
            health.recovered()
            return
        except asyncio.CancelledError:
            raise  # shutting down: the batch stays unacknowledged, so it is consumed again
        except Exception as exc:
            # A fixed phrase for the unauthenticated /ready; the details (hosts included) go to the log.
            health.failing("applying records to the online store failed; retrying")
            delay = next(delays)
            log.error("applying a batch of %d records failed, retrying in %.1f s: %s", len(batch), delay, exc)
            await asyncio.sleep(delay)
