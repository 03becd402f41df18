"""The online processor end to end: Kafka → faust → Redis (issue 4, "Done when")."""

from __future__ import annotations

import os
import random
import signal
import time

import orjson
import pytest
from confluent_kafka import Producer

from featurestream.sdk import FeatureStore
from schemas.ttl import Ttl
from tests.integration.helpers import customer, customers_group, read_topic
from tests.integration.procs import Proc
from tests.support.online_oracle import expected_online_state
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration


@pytest.fixture(params=["confluent", "faust"])
def engine(request) -> str:
    """Both processor engines pass the same tests (a test may pin one by parametrizing ``engine``)."""
    return request.param


@pytest.fixture
def processors(stack, tmp_path, engine):
    started: list[Proc] = []

    def start(name: str = "p", *extra: str) -> Proc:
        proc = Proc(stack, ["process", "--engine", engine, "--metrics-port", "0", "--log-level", "warning",
                            *extra], tmp_path / f"{name}-{len(started)}.log")
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()


def _online_state(store: FeatureStore, group: str, ids) -> dict[str, dict | None]:
    return {rid: store.get_record(group, rid) for rid in ids}


def _converged(store, group, expected):
    return _online_state(store, group, expected) == expected


@pytest.mark.parametrize(("engine", "mode"), [("confluent", ()), ("faust", ()), ("faust", ("--apply-in-thread",))],
                         ids=["confluent", "faust-apply-process", "faust-apply-in-thread"])
def test_out_of_order_duplicates_and_equal_event_times(store, stack, processors, unique_name, engine, mode):
    g = store.create_feature_group(customers_group(unique_name("order"), partitions=3))
    rng = random.Random(7)
    records = []
    for i in range(30):
        seconds = list(range(10))
        rng.shuffle(seconds)
        for s in seconds:
            records.append(customer(i, second=s, age=s))
        records.append(customer(i, second=5, age=500))  # equal event time, written later: wins over age=5
        records.append(records[-3])  # an exact duplicate of an older write
    for r in records:
        store.put_record_async(g.name, r)
    store.publisher.flush()
    proc = processors("order", *mode)
    expected = expected_online_state(stack, store.registry.topic_of(g.name))
    assert all(v["age"] == 9 for v in expected.values())
    wait_for(lambda: _converged(store, g.name, expected), timeout_s=90, what="online state to converge")
    # equal event time: the later write of the key wins
    store.put_record(g.name, customer(0, second=9, age=900), wait_online=True, wait_timeout_s=30)
    assert store.get_record(g.name, "c0")["age"] == 900
    store.put_record(g.name, customer(0, second=8, age=800))  # older: historic, not applied online
    store.put_record(g.name, customer(0, second=9, age=901), wait_online=True, wait_timeout_s=30)
    assert store.get_record(g.name, "c0")["age"] == 901
    if engine == "faust":
        assert bool(proc.children()) == (not mode), "faust's apply step runs in a child process unless told otherwise"
    else:
        assert not proc.children(), "the confluent engine applies in its own process"


def test_two_processors_give_the_same_state_as_one(store, stack, processors, unique_name):
    g = store.create_feature_group(customers_group(unique_name("twin"), partitions=6))
    processors("a")
    processors("b")
    rng = random.Random(11)
    rows = [customer(rng.randrange(200), second=rng.randrange(3600), age=rng.randrange(100)) for _ in range(4000)]
    assert store.ingest(g.name, rows, progress=False).published == 4000
    expected = expected_online_state(stack, store.registry.topic_of(g.name))
    wait_for(lambda: _converged(store, g.name, expected), timeout_s=120, what="two processors to converge")


def test_ttl_expiry_and_deletes(store, processors, unique_name):
    g = store.create_feature_group(customers_group(unique_name("ttl"), ttl=Ttl(1, "Hours")))
    processors()
    store.put_record(g.name, customer(9), wait_online=True, wait_timeout_s=60)  # the processor is live
    fresh = {**customer(1), "event_time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    store.put_record(g.name, fresh, ttl=6, wait_online=True, wait_timeout_s=5)  # record TTL 6 s over group 1 h
    assert store.get_record(g.name, "c1")["age"] == fresh["age"]
    wait_for(lambda: store.get_record(g.name, "c1") is None, timeout_s=20, what="the record to expire")
    # soft delete hides; an older put stays rejected
    store.put_record(g.name, customer(2, second=10), wait_online=True, wait_timeout_s=30)
    store.delete_record(g.name, "c2", "2031-01-01T00:00:20Z")
    wait_for(lambda: store.get_record(g.name, "c2") is None, what="soft delete")
    store.put_record(g.name, customer(2, second=15))
    store.put_record(g.name, customer(3, second=1), wait_online=True, wait_timeout_s=30)  # a marker after it
    assert store.get_record(g.name, "c2") is None
    # hard delete removes; an older put is accepted again
    store.delete_record(g.name, "c3", "2031-01-01T00:00:30Z", mode="hard")
    wait_for(lambda: store.get_record(g.name, "c3") is None, what="hard delete")
    store.put_record(g.name, customer(3, second=2, age=77), wait_online=True, wait_timeout_s=30)
    assert store.get_record(g.name, "c3")["age"] == 77


def test_poison_messages_are_dead_lettered_while_good_records_flow(store, stack, processors, unique_name):
    g = store.create_feature_group(customers_group(unique_name("dlq")))
    topic = store.registry.topic_of(g.name)
    processors()
    p = Producer({"bootstrap.servers": stack.kafka_bootstrap})
    p.produce(topic, key=b"junk", value=b"\xff\xfe not json at all")
    bad_schema = {"op": "put", "id": "c9", "event_time_ns": 1, "record": {"customer_id": "c9", "age": "old"}}
    p.produce(topic, key=b"c9", value=orjson.dumps(bad_schema), headers=[("fs-format", b"json/1")])
    p.flush(10)
    store.put_record(g.name, customer(4), wait_online=True, wait_timeout_s=60)
    dlq = f"{stack.topic_prefix}._deadletter"

    def dead_letters():
        recs = [m for m in _raw_messages(stack, dlq) if dict(m.headers()).get("fs-dlq-source-topic") == topic.encode()]
        return recs if len(recs) == 2 else None

    recs = wait_for(dead_letters, timeout_s=60, what="two dead letters")
    reasons = sorted(dict(m.headers())["fs-dlq-reason"].decode() for m in recs)
    assert any("JSON" in r for r in reasons) and any("age" in r for r in reasons)
    assert {m.value() for m in recs} >= {b"\xff\xfe not json at all"}


def _raw_messages(stack, topic: str) -> list:
    return read_topic(stack, topic, timeout_s=30)


def _hashes(store, group) -> dict:
    client = store.online.client
    keys = sorted(client.scan_iter(match=f"{store.config.topic_prefix}:{group}:*", count=1000))
    return {k: client.hgetall(k) for k in keys}


def test_replay_and_rebuild_give_identical_state(store, stack, processors, unique_name):
    g = store.create_feature_group(customers_group(unique_name("rebuild")))
    rng = random.Random(3)
    rows = [customer(rng.randrange(100), second=rng.randrange(600), age=rng.randrange(90)) for _ in range(2000)]
    store.ingest(g.name, rows, progress=False)
    store.delete_record(g.name, "c5", "2031-01-01T02:00:00Z")
    store.delete_record(g.name, "c6", "2031-01-01T02:00:00Z", mode="hard")
    proc = processors()
    expected = expected_online_state(stack, store.registry.topic_of(g.name))
    wait_for(lambda: _converged(store, g.name, expected), timeout_s=90, what="processing")
    proc.stop()
    before = _hashes(store, g.name)
    assert before
    store.replay(g.name, target="online", progress=False)
    assert _hashes(store, g.name) == before
    removed, result = store.rebuild_online(g.name, progress=False)
    assert removed == len(before) and result.records == 2002
    assert _hashes(store, g.name) == before


def test_processor_killed_mid_stream_loses_and_duplicates_nothing(store, stack, processors, unique_name, engine):
    g = store.create_feature_group(customers_group(unique_name("kill"), partitions=4))
    rng = random.Random(5)
    first = processors("first")
    rows = [customer(rng.randrange(500), second=rng.randrange(3600), age=rng.randrange(100)) for _ in range(20000)]
    store.ingest(g.name, rows[:10000], progress=False)
    _wait_until_some_applied(store, g.name, range(0, 500, 25))  # then kill -9 mid-stream
    orphans = first.children()
    assert bool(orphans) == (engine == "faust"), "only the faust engine applies batches in a child process"
    first.kill()
    # The apply process must not outlive a processor killed with -9 (it would keep writing).
    wait_for(lambda: not any(_running(pid) for pid in orphans), timeout_s=15,
             what=f"apply process(es) {orphans} to exit after the processor was killed")
    store.ingest(g.name, rows[10000:], progress=False)
    second = processors("second")
    expected = expected_online_state(stack, store.registry.topic_of(g.name))
    wait_for(lambda: _converged(store, g.name, expected), timeout_s=180,
             what=f"the restarted processor to converge\n{second.tail()}")


@pytest.mark.parametrize("engine", ["faust"])  # the confluent engine has no apply process
def test_apply_process_killed_mid_stream_is_replaced_and_nothing_is_lost(store, stack, processors, unique_name):
    g = store.create_feature_group(customers_group(unique_name("applykill"), partitions=2))
    rng = random.Random(9)
    proc = processors("applykill")
    rows = [customer(rng.randrange(300), second=rng.randrange(3600), age=rng.randrange(100)) for _ in range(12000)]
    store.ingest(g.name, rows[:6000], progress=False)
    _wait_until_some_applied(store, g.name, range(0, 300, 15))
    child = wait_for(proc.children, timeout_s=10, what="the apply process")[0]
    os.kill(child, signal.SIGKILL)
    store.ingest(g.name, rows[6000:], progress=False)
    expected = expected_online_state(stack, store.registry.topic_of(g.name))
    wait_for(lambda: _converged(store, g.name, expected), timeout_s=120,
             what=f"the processor to replace its apply process and converge\n{proc.tail()}")
    assert proc.alive(), proc.tail()
    assert child not in proc.children()


def _wait_until_some_applied(store: FeatureStore, group: str, numbers: range) -> None:
    ids = [f"c{i}" for i in numbers]
    wait_for(lambda: sum(v is not None for v in _online_state(store, group, ids).values()) >= 5,
             timeout_s=60, what="the processor to apply some records")


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited
    except OSError:
        return False


def test_deleting_groups_while_the_processor_runs_does_not_stop_it(store, processors, unique_name):
    proc = processors()
    for i in range(3):
        g = store.create_feature_group(customers_group(unique_name(f"gone{i}")))
        store.put_record(g.name, customer(i), wait_online=True, wait_timeout_s=60)
        store.delete_feature_group(g.name)
        assert proc.alive(), proc.tail()
    after = store.create_feature_group(customers_group(unique_name("after")))
    store.put_record(after.name, customer(7), wait_online=True, wait_timeout_s=60)
    assert proc.alive() and "Partition is not assigned" not in proc.log.read_text()
