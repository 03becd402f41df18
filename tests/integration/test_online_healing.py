"""The processor notices that Redis lost the online store and rebuilds it from Kafka by itself.

Each test runs its own throw-away redis-server (no persistence, as the local stack's), so
that killing or flushing it disturbs no other test. Ground truth comes from the topic alone.
"""

from __future__ import annotations

import random
import subprocess
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import redis

from featurestream.sdk import FeatureStore
from featurestream.stack.ports import free_port
from featurestream.stack.redis_server import find_redis_server, redis_answers, redis_argv
from schemas.names import online_epoch_key
from tests.integration.helpers import customer, customers_group
from tests.integration.procs import Proc
from tests.support.online_oracle import expected_online_state
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration


class PrivateRedis:
    """A redis-server on a free loopback port that a test may kill -9 and start again."""

    def __init__(self, data_dir: Path) -> None:
        self.port = free_port()
        self.dir = data_dir
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(redis_argv(find_redis_server(), self.port, self.dir),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: redis_answers(self.url), timeout_s=20, what=f"redis-server on port {self.port}")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=30)


@pytest.fixture
def private_redis(tmp_path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    if server.proc is not None and server.proc.poll() is None:
        server.kill()


def _online(store: FeatureStore, group: str, ids) -> dict:
    return {rid: store.get_record(group, rid) for rid in ids}


def _healthy(store: FeatureStore, group: str, expected: dict) -> bool:
    try:
        return _online(store, group, expected) == expected
    except Exception:  # noqa: BLE001 - Redis still coming back: not healthy yet
        return False


def test_flushall_and_a_kill_9_restart_of_redis_are_rebuilt_while_records_keep_arriving(
        stack, private_redis, tmp_path, unique_name):
    cfg = replace(stack, redis_url=private_redis.url)
    with FeatureStore(cfg) as store:
        g = store.create_feature_group(customers_group(unique_name("heal"), partitions=3))
        topic = store.registry.topic_of(g.name)
        rng = random.Random(11)

        def batch(n: int) -> list[dict]:
            return [customer(rng.randrange(300), second=rng.randrange(3600), age=rng.randrange(100))
                    for _ in range(n)]

        store.ingest(g.name, batch(3000), progress=False)
        proc = Proc(cfg, ["process", "--metrics-port", "0", "--log-level", "warning"], tmp_path / "p.log")
        try:
            expected = expected_online_state(stack, topic)
            wait_for(lambda: _healthy(store, g.name, expected), timeout_s=120,
                     what=f"the processor to build the online store\n{proc.tail()}")
            # This Redis starts empty while the session's online consumer group has committed offsets
            # (earlier tests): the processor must rebuild every online group of the prefix, and say so.
            client = redis.Redis.from_url(private_redis.url)
            key = online_epoch_key(cfg.topic_prefix)
            wait_for(lambda: (client.get(key) or b"").startswith(b"ready:"), timeout_s=180,
                     what=f"the first build to finish and mark the store ready\n{proc.tail()}")

            # 1. FLUSHALL: every record and the marker are gone; the processor rebuilds.
            redis.Redis.from_url(private_redis.url).flushall()
            store.ingest(g.name, batch(500), progress=False)
            expected = expected_online_state(stack, topic)
            wait_for(lambda: _healthy(store, g.name, expected), timeout_s=120,
                     what=f"the online store to be rebuilt after FLUSHALL\n{proc.tail()}")

            # 2. kill -9 and a restart without persistence, with records published while it is down.
            private_redis.kill()
            store.ingest(g.name, batch(500), progress=False)
            private_redis.start()
            store.ingest(g.name, batch(500), progress=False)
            expected = expected_online_state(stack, topic)
            # every id, not a sample: the latest record per id from the topic
            wait_for(lambda: _healthy(store, g.name, expected), timeout_s=180,
                     what=f"the online store to be rebuilt after a Redis restart\n{proc.tail()}")
            assert proc.alive(), proc.tail()
            log = proc.log.read_text(errors="replace")
            assert log.count("rebuilding it from Kafka") >= 2, log[-3000:]
        finally:
            proc.stop()
