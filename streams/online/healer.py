"""Self-healing of the online store: notice that Redis lost it, rebuild it from Kafka on our own.

The processor runs one :class:`OnlineHealer` beside its faust app. It also warns when Redis may
evict online records (``sinks/online/eviction.py``): at start if the policy is not
``noeviction``, and whenever Redis's ``evicted_keys`` grows. Every ``check_every_s`` (and
so within seconds of Redis coming back after a restart) it reads the epoch marker
(``sinks/online/epoch.py``). When the marker is gone, the store lost data (or was never built):
the healer claims the rebuild, replays every online group's topic from its start through its
own applier, renewing the claim's lease as it goes, and marks the store ready at the end.

Live records keep applying meanwhile: the online store is write-if-newer (``schemas/ordering.py``),
so a replayed old version never overwrites a newer live one, and the order in which the two
paths reach a key does not matter. If Redis loses data again during a rebuild, the marker goes
with it: the healer sees its claim gone, abandons the rebuild and starts a new one. If the
rebuilding processor dies, its lease runs out and another processor (or its restart) takes over.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any

from schemas.backoff import Backoff
from schemas.group import FeatureGroup
from sinks.online.epoch import READY, EpochMarker
from sinks.online.eviction import SAFE_POLICY, evicted_keys, eviction_policy
from streams.group_view import GroupView
from streams.kafka_client import KafkaTarget
from streams.metrics import ONLINE_METRICS
from streams.online.aggregate_step import online_input_groups
from streams.replay import replay_topic
from streams.route import RawMessage

log = logging.getLogger("featurestream.online.healer")

ApplyBatch = Callable[[list[RawMessage]], Any]


class OnlineHealer:
    """Watches the epoch marker from a daemon thread and rebuilds the online store when it is lost."""

    def __init__(self, marker: EpochMarker, groups: GroupView, bootstrap: KafkaTarget,
                 topic_of: Callable[[FeatureGroup], str], apply_batch: ApplyBatch, *, check_every_s: float = 2.0, lease_s: float = 15.0,
                 live_path_replays_all: Callable[[], bool] | None = None) -> None:
        self.marker = marker
        self.groups = groups
        self.bootstrap = bootstrap
        self.topic_of = topic_of
        self.apply_batch = apply_batch
        self.check_every_s = check_every_s
        self.lease_ms = int(lease_s * 1000)
        # True when the live consumer group has committed nothing yet: it then reads every topic
        # from its start itself, and a rebuild beside it would only do the same work twice.
        self.live_path_replays_all = live_path_replays_all
        self.rebuilds_done = 0
        self._token: str | None = None      # our claim while we rebuild
        self._abandon = threading.Event()   # our claim was lost: stop the rebuild under way
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="online-healer", daemon=True)
        self._rebuild_thread: threading.Thread | None = None
        self._policy_checked = False
        self._evicted: int | None = None
        self._retry = Backoff(min(2 * check_every_s, 60.0), 60.0)
        self._first_delay = check_every_s

    def start(self) -> None:
        """Check once here, then every ``check_every_s`` from a daemon thread.

        The first check runs before this returns, so before the caller starts its live path: whether
        that path reads every topic from its start (its consumer group has committed nothing) is then
        decided before it can commit. Checked from the thread instead, a fast live path had committed
        its first batch by then, and a fresh store got a rebuild beside a live path that was already
        replaying everything: twice the work, and the records counter counting both."""
        self._first_delay = self._check_logged()
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        self._abandon.set()
        self._thread.join(timeout_s)
        if self._rebuild_thread is not None:
            self._rebuild_thread.join(timeout_s)

    @property
    def rebuilding(self) -> bool:
        return self._rebuild_thread is not None and self._rebuild_thread.is_alive()

    def _loop(self) -> None:
        delay = self._first_delay
        while not self._stop.wait(delay):
            delay = self._check_logged()

    def _check_logged(self) -> float:
        """One check; the seconds to the next. Redis away: the check runs again after twice the
        interval, doubling up to a minute."""
        try:
            self.check_once()
            self._retry.succeeded()
            return self.check_every_s
        except Exception as exc:  # noqa: BLE001 - Redis away: the check runs again, less often
            delay = self._retry.failed()
            log.warning("online store check failed (next try in %.0f s): %s", delay, exc)
            return delay

    def check_eviction(self) -> None:
        """Warn once about an evicting policy, and every time Redis's evicted_keys grows."""
        client = self.marker.client
        if not self._policy_checked:
            policy = eviction_policy(client)
            self._policy_checked = True
            if policy is not None and policy != SAFE_POLICY:
                log.warning("Redis's maxmemory-policy is %r: under memory pressure it deletes online records "
                            "silently (the processor cannot tell them from never-written ones). Set it to %r, "
                            "so that a full Redis refuses writes (retried) instead", policy, SAFE_POLICY)
        count = evicted_keys(client)
        if count is None:
            return
        ONLINE_METRICS.evicted_keys.set(count)
        if self._evicted is not None and count > self._evicted:
            log.warning("Redis evicted %d key(s) since the last check (evicted_keys %d): online records were "
                        "lost; run `featurestream rebuild-online GROUP`, and give Redis memory or a "
                        "noeviction policy", count - self._evicted, count)
        self._evicted = count

    def check_once(self) -> None:
        """One look at the marker: renew our claim, notice a loss, or start a rebuild."""
        self.check_eviction()
        if self.rebuilding:
            assert self._token is not None
            if not self.marker.renew(self._token, self.lease_ms):
                log.warning("the online store lost data again during its rebuild (or another processor took "
                            "the rebuild over): abandoning this rebuild")
                ONLINE_METRICS.rebuilds.labels(outcome="abandoned").inc()
                self._abandon.set()
            return
        value = self.marker.read()
        if value is not None:
            return  # ready, or another processor's rebuild holds a live lease
        token = secrets.token_hex(8)
        if not self.marker.claim_rebuild(token, self.lease_ms):
            return  # another processor claimed it first
        if self.live_path_replays_all is not None and self.live_path_replays_all():
            self.marker.finish(token)
            log.info("online store: no epoch marker, and the online consumer group has committed nothing yet: "
                     "the live path reads every topic from its start, so no separate rebuild (epoch %s)", token)
            return
        ONLINE_METRICS.store_lost.inc()
        log.warning("the online store has no epoch marker: Redis lost its data (restart without persistence, "
                    "FLUSHALL, failover, another server) or it was never built; rebuilding it from Kafka "
                    "while new records keep applying (token %s)", token)
        self._token = token
        self._abandon = threading.Event()
        self._rebuild_thread = threading.Thread(target=self._rebuild, args=(token, self._abandon),
                                                name="online-rebuild", daemon=True)
        self._rebuild_thread.start()

    def _rebuild(self, token: str, abandon: threading.Event) -> None:
        started = time.monotonic()
        ONLINE_METRICS.rebuilds.labels(outcome="started").inc()
        ONLINE_METRICS.rebuilding.set(1)
        try:
            groups = online_input_groups(self.groups.all(fresh=True))
            done_before = 0
            records = 0
            for g in sorted(groups, key=lambda g: g.name):
                def progress(done: int, total: int, base: int = done_before) -> None:
                    ONLINE_METRICS.rebuild_records.set(base + done)

                result = replay_topic(self.bootstrap, self.topic_of(g), self.apply_batch, progress=False,
                                      on_progress=progress, cancelled=abandon.is_set)
                records += result.records
                done_before += result.records
                if result.cancelled:
                    return
            if abandon.is_set() or not self.marker.finish(token):
                return  # lost again meanwhile: the watcher starts over
            self.rebuilds_done += 1
            ONLINE_METRICS.rebuilds.labels(outcome="done").inc()
            log.warning("online store rebuilt from Kafka: %d records of %d group(s) replayed in %.1f s; marker %s%s",
                        records, len(groups), time.monotonic() - started, READY, token)
        except Exception as exc:  # noqa: BLE001 - the lease runs out and the next check starts over
            ONLINE_METRICS.rebuilds.labels(outcome="failed").inc()
            log.error("online store rebuild failed (it starts again when its lease of %d s runs out): %s",
                      self.lease_ms // 1000, exc)
        finally:
            ONLINE_METRICS.rebuilding.set(0)
