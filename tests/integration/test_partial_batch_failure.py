"""A batch write that fails partway dead-letters only the records that did not land, each with Redis's reason.

Caused on a real redis-server: memory filled past a small ``maxmemory`` with ``noeviction``. Redis
checks a script against maxmemory only until the script's first write; once one write ran, it lets
the rest through. So a batch [stale put, put of a new id, hard delete of a stored id, put of another
new id] splits: the stale put changes nothing, the new id is refused with OOM, the hard delete lands
(a DEL frees memory) and the last put lands after it. Only the refused record is dead-lettered.
Before the fix every write of the script went through even past maxmemory (it started with a DEL),
and a refusal under ``redis.call`` would have aborted the call with earlier records landed.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import redis

from featurestream.sdk import FeatureStore
from schemas.names import deadletter_topic
from streams.online.applier import make_online_applier
from streams.route import raw_from_confluent
from tests.integration.helpers import customer, customers_group, read_topic
from tests.integration.test_online_healing import PrivateRedis

pytestmark = pytest.mark.integration


@pytest.fixture
def small_redis(tmp_path):
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    if server.proc is not None and server.proc.poll() is None:
        server.kill()


def _fill_past_maxmemory(url: str) -> str:
    """Write ~4 MB of filler, then set maxmemory below what is used (noeviction): every first write of a
    script or command that needs memory is refused from now on. Returns Redis's OOM reply."""
    client = redis.Redis.from_url(url)
    client.config_set("maxmemory-policy", "noeviction")
    pipe = client.pipeline(transaction=False)
    for i in range(400):
        pipe.set(f"filler:{i}", b"x" * 10_000)
    pipe.execute()
    used = int(client.info("memory")["used_memory"])
    client.config_set("maxmemory", str(used - 1_000_000))
    with pytest.raises(redis.exceptions.OutOfMemoryError) as refused:
        client.set("probe", b"y" * 1000)
    return str(refused.value)


def test_only_the_records_that_did_not_land_are_dead_lettered_with_redis_reason(stack, small_redis, unique_name):
    cfg = replace(stack, redis_url=small_redis.url)
    with FeatureStore(cfg) as store:
        g = store.create_feature_group(customers_group(unique_name("oom"), partitions=1))
        topic = store.registry.topic_of(g.name)

        def rec(i: int, second: int, age: int) -> dict:
            return customer(i, second=second, age=age)

        # offsets 0, 1: what the store holds before memory runs out
        store.put_record(g.name, rec(1, 20, 1))    # X, newest at second 20
        store.put_record(g.name, rec(2, 10, 2))    # B, at second 10
        # offsets 2..5: the batch applied under OOM
        store.put_record(g.name, rec(1, 5, 3))     # X older: stale, nothing to write
        store.put_record(g.name, rec(3, 10, 4))    # A: a new id, the call's first write: refused (OOM)
        store.delete_record(g.name, "c2", "2031-01-01T00:00:40Z", mode="hard")  # B removed: lands
        store.put_record(g.name, rec(4, 10, 6))    # C: a new id, after the call changed data: lands
        raws = sorted((raw_from_confluent(m) for m in read_topic(stack, topic)), key=lambda r: r.offset)
        assert [r.offset for r in raws] == [0, 1, 2, 3, 4, 5]

        applier = make_online_applier(cfg.kafka(), cfg.redis_url, cfg.topic_prefix, stage="online")
        try:
            before = applier.apply(raws[:2])
            assert before.dead_lettered == 0 and before.records == {(g.name, "applied"): 2}
            oom = _fill_past_maxmemory(small_redis.url)
            assert "maxmemory" in oom, oom

            summary = applier.apply(raws[2:])
        finally:
            applier.store.close()
            applier.deadletters.publisher.close()
        assert summary.records == {(g.name, "stale"): 1, (g.name, "rejected"): 1, (g.name, "deleted"): 1,
                                   (g.name, "applied"): 1}, summary
        assert summary.dead_lettered == 1, summary

    letters = [m for m in read_topic(stack, deadletter_topic(cfg.topic_prefix))
               if dict(m.headers() or []).get("fs-dlq-source-topic") == topic.encode()]
    assert [(int(dict(m.headers())["fs-dlq-source-offset"]), m.key()) for m in letters] == [(3, b"c3")]
    reason = dict(letters[0].headers())["fs-dlq-reason"].decode()
    assert "OOM command not allowed" in reason and "c3" in reason, reason

    with FeatureStore(cfg) as store:
        assert store.get_record(g.name, "c1")["age"] == 1      # the stale put changed nothing
        assert store.get_record(g.name, "c2") is None           # the hard delete landed
        assert store.get_record(g.name, "c4")["age"] == 6      # landed
        assert store.get_record(g.name, "c3") is None           # refused, and dead-lettered

