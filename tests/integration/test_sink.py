"""The offline sink end to end: Kafka → `featurestream sink` → Iceberg tables on the S3 server.

Every check compares the table's current snapshot (read through pyiceberg, as queries do) with
the topic's contents read independently with plain confluent-kafka: each published offset must
be in the table exactly once, whatever was killed, lost or doubled on the way.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from dataclasses import replace

import orjson
import pytest
from confluent_kafka import Producer

from featurestream.config import Config
from featurestream.sdk import FeatureStore
from sinks.offline.catalog import OfflineTables
from sinks.offline.maintenance import STEPS
from sinks.offline.partition_writer import STAGES
from sinks.offline.table_commit import recorded_offsets
from streams.admin import admin_client, ensure_topic
from streams.lag import committed_offsets
from streams.offline.worker import consumer_group_id
from tests.integration.helpers import customer, customers_group, dead_letters, read_topic
from tests.integration.procs import Proc
from tests.support.offline import table_coordinates
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def sinks(stack, tmp_path):
    started: list[Proc] = []

    def start(*flags: str, config: Config | None = None) -> Proc:
        proc = Proc(config or stack, ["sink", "--metrics-port", "0", "--log-level", "info", *flags],
                    tmp_path / f"sink-{len(started)}.log")
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()


def _tables(config: Config) -> OfflineTables:
    return OfflineTables.open(config.catalog(), config.topic_prefix, config.storage_options())


def _topic_coords(stack: Config, topic: str) -> Counter:
    """(topic, partition, offset) of every message of ``topic``, read with plain confluent-kafka."""
    return Counter((topic, m.partition(), m.offset()) for m in read_topic(stack, topic))


def _exactly(tables: OfflineTables, g, expected: Counter):
    got = table_coordinates(tables, g)
    return got if got == expected else None


def _no_duplicates(tables: OfflineTables, g) -> list:
    return [k for k, n in table_coordinates(tables, g).items() if n > 1][:5]


def _data_files(tables: OfflineTables, g) -> int:
    table = tables.existing(g)
    return 0 if table is None or table.current_snapshot() is None else len(list(table.scan().plan_files()))


def _lag(stack: Config, topic: str) -> int:
    ends = _topic_coords(stack, topic)
    committed = committed_offsets(stack.kafka_bootstrap, consumer_group_id(stack.topic_prefix), [topic])
    last: dict[int, int] = {}
    for _, p, o in ends:
        last[p] = max(last.get(p, -1), o)
    return sum(max(0, last[p] + 1 - committed.get((topic, p), 0)) for p in last)


def test_every_record_once_historic_deletes_poison_and_new_groups(store, stack, sinks, unique_name):
    tables = _tables(stack)
    g = store.create_feature_group(customers_group(unique_name("sink"), partitions=3))
    topic = store.registry.topic_of(g.name)
    # historic (older event times after newer ones) and deletes are rows too
    rows = [customer(i % 40, second=(i * 37) % 3600, age=i % 90) for i in range(600)]
    assert store.ingest(g.name, rows, progress=False).published == 600
    for i in range(5):
        store.delete_record(g.name, f"c{i}", "2031-01-01T00:30:00Z")
    off = store.create_feature_group(customers_group(unique_name("nooffline"), offline=False))
    store.put_record(off.name, customer(1))
    p = Producer({"bootstrap.servers": stack.kafka_bootstrap})
    p.produce(topic, key=b"junk", value=b"\xff\xfe not json", partition=0)
    bad = {"op": "put", "id": "c9", "event_time_ns": 1, "record": {"customer_id": "c9", "age": "old"}}
    p.produce(topic, key=b"c9", value=orjson.dumps(bad), headers=[("fs-format", b"json/1")], partition=1)
    unknown = f"{stack.topic_prefix}.{unique_name('ghost')}"  # a topic without a registry entry
    ensure_topic(admin_client(stack.kafka_bootstrap), unknown, partitions=1, replication_factor=1)
    p.produce(unknown, key=b"x", value=b"{}")
    assert p.flush(10) == 0
    sinks("--max-age-s", "1", "--compact-every-s", "0")
    expected = _topic_coords(stack, topic)
    poison = {(topic, 0, max(o for t, p_, o in expected if p_ == 0)),
              (topic, 1, max(o for t, p_, o in expected if p_ == 1))}
    wanted = Counter({k: 1 for k in expected if k not in poison})
    wait_for(lambda: _exactly(tables, g, wanted), timeout_s=60, what="every good record as one offline row")
    # a group created while the sink runs is picked up without a restart
    late = store.create_feature_group(customers_group(unique_name("late"), partitions=1))
    store.put_record(late.name, customer(7))
    wait_for(lambda: table_coordinates(tables, late).total() == 1, timeout_s=60, what="the new group's row")
    # poison went to the dead-letter topic (stage offline) and the offsets moved past it
    dls = wait_for(lambda: (d := dead_letters(stack, topic, "offline")) and len(d) >= 2 and d, timeout_s=30,
                   what="two offline dead letters")
    reasons = " | ".join(reason for _, reason in dls)
    assert "JSON" in reasons and "age" in reasons, reasons
    assert wait_for(lambda: dead_letters(stack, unknown, "offline"), timeout_s=30, what="unknown-group dead letter")
    for t in (topic, store.registry.topic_of(off.name), unknown):
        wait_for(lambda t=t: _lag(stack, t) == 0, timeout_s=30, what=f"offsets of {t} committed past everything")
    # historic and deleted rows are all there, and the table records where the topic ends
    t = tables.existing(g).scan(selected_fields=("customer_id", "is_deleted")).to_arrow()
    assert sum(t["is_deleted"].to_pylist()) == 5 and t.num_rows == 605
    ends = {p_: max(o for _, q, o in expected if q == p_) + 1 for p_ in range(3)}
    assert recorded_offsets(tables.existing(g)) == {(topic, p_): e for p_, e in ends.items()}


def _publisher(store: FeatureStore, group: str, total: int, stop: threading.Event) -> threading.Thread:
    def run() -> None:
        rng = random.Random(3)
        sent = 0
        while sent < total and not stop.is_set():
            n = min(150, total - sent)
            store.ingest(group, [customer(rng.randrange(500), second=rng.randrange(7200)) for _ in range(n)],
                         progress=False)
            sent += n
            stop.wait(0.15)  # spread publishing over the kill rounds

    th = threading.Thread(target=run, daemon=True)
    th.start()
    return th


def test_kill_9_at_every_stage_of_a_flush_keeps_exactly_once(store, stack, sinks, unique_name):
    """kill -9 before the upload, after the upload (files on S3, no commit), after the table
    commit (before the consumer-group commit), then at random moments, all while publishing."""
    tables = _tables(stack)
    g = store.create_feature_group(customers_group(unique_name("kill"), partitions=3))
    topic = store.registry.topic_of(g.name)
    stop = threading.Event()
    pub = _publisher(store, g.name, 12_000, stop)
    rng = random.Random(5)
    # 400 rows a flush: each flush is an Iceberg commit (~0.1-0.3 s here), and 30 of them cover
    # the kill rounds; more, smaller ones would only make the test slow.
    flags = ("--max-records", "400", "--max-age-s", "0.5", "--compact-every-s", "0",
             "--instance-id", f"{g.name}-sink")
    try:
        for i, stage in enumerate((*STAGES, "after_commit") * 2):
            proc = sinks(*flags, "--kill-after-flushes", str(1 + i % 3), "--kill-stage", stage)
            wait_for(lambda p=proc: not p.alive(), timeout_s=60, interval_s=0.2,
                     what=f"the sink to be killed at {stage}")
            assert proc.popen.returncode == -9, proc.tail()
            assert f"killing the sink at {stage}" in proc.log.read_text(errors="replace"), proc.tail()
            assert not _no_duplicates(tables, g), stage
        for _ in range(4):  # and anywhere: mid-buffer, mid-upload, mid-commit
            proc = sinks(*flags)
            before = _data_files(tables, g)
            wait_for(lambda b=before: _data_files(tables, g) > b or not pub.is_alive(), timeout_s=60,
                     interval_s=0.2, what="the sink to commit files")
            time.sleep(rng.uniform(0.0, 1.5))
            proc.kill()
    finally:
        pub.join(120)
        stop.set()
    sinks(*flags)
    expected = _topic_coords(stack, topic)
    assert expected.total() == 12_000
    wait_for(lambda: _exactly(tables, g, expected), timeout_s=120, interval_s=0.5,
             what="every published (partition, offset) exactly once after kill -9 rounds")


def test_lost_consumer_group_offsets_change_nothing(store, stack, sinks, unique_name):
    """The consumer group is deleted while the sink is down: it resumes from the table's offsets,
    not from the earliest offset (which would double every row)."""
    tables = _tables(stack)
    g = store.create_feature_group(customers_group(unique_name("lost"), partitions=2))
    topic = store.registry.topic_of(g.name)
    store.ingest(g.name, [customer(i, second=i) for i in range(1500)], progress=False)
    proc = sinks("--max-age-s", "0.5", "--compact-every-s", "0")
    wait_for(lambda: _exactly(tables, g, _topic_coords(stack, topic)), timeout_s=90, what="all rows")
    wait_for(lambda: _lag(stack, topic) == 0, timeout_s=30, what="the group's offsets committed")
    proc.stop()
    admin = admin_client(stack.kafka_bootstrap)  # kept alive until its futures answer
    futures = admin.delete_consumer_groups([consumer_group_id(stack.topic_prefix)])
    for f in futures.values():
        f.result(30)
    assert committed_offsets(stack.kafka_bootstrap, consumer_group_id(stack.topic_prefix), [topic]) == {}
    store.ingest(g.name, [customer(i, second=i) for i in range(1500, 1800)], progress=False)
    sinks("--max-age-s", "0.5", "--compact-every-s", "0")
    expected = _topic_coords(stack, topic)
    assert expected.total() == 1800
    wait_for(lambda: _exactly(tables, g, expected), timeout_s=90, interval_s=0.5,
             what="the new rows once and the old ones not again")
    time.sleep(3)  # a sink that re-read from earliest would be committing duplicates by now
    assert _exactly(tables, g, expected), _no_duplicates(tables, g)


def test_two_sinks_that_both_own_every_partition_write_each_row_once(store, stack, sinks, unique_name):
    """A zombie: two sinks in different consumer groups both consume every partition and race
    to commit the same offsets. The table refuses whichever commit comes second."""
    tables = _tables(stack)
    g = store.create_feature_group(customers_group(unique_name("zombie"), partitions=2))
    topic = store.registry.topic_of(g.name)
    stop = threading.Event()
    pub = _publisher(store, g.name, 6_000, stop)
    flags = ("--max-records", "100", "--max-age-s", "0.3", "--compact-every-s", "0")
    a = sinks(*flags, "--consumer-group", f"{g.name}-a")
    b = sinks(*flags, "--consumer-group", f"{g.name}-b")
    try:
        pub.join(120)
    finally:
        stop.set()
    expected = _topic_coords(stack, topic)
    assert expected.total() == 6_000
    wait_for(lambda: _exactly(tables, g, expected), timeout_s=120, interval_s=0.5,
             what="every offset once although two sinks wrote it")
    logs = a.log.read_text(errors="replace") + b.log.read_text(errors="replace")
    assert "refused a commit" in logs, "the race never happened: this test proved nothing"
    assert a.alive() and b.alive()


def test_kill_9_at_each_compaction_step_keeps_exactly_once(store, stack, sinks, unique_name):
    tables = _tables(stack)
    g = store.create_feature_group(customers_group(unique_name("kcomp"), partitions=2))
    topic = store.registry.topic_of(g.name)
    flags = ("--max-records", "100", "--max-age-s", "0.5", "--compact-every-s", "1",
             "--target-file-mb", "0.5", "--instance-id", f"{g.name}-sink")
    rng = random.Random(9)
    published = 0
    for step in (*STEPS, "random", "random"):
        rows = [customer(rng.randrange(300), second=rng.randrange(3600)) for _ in range(1200)]
        published += store.ingest(g.name, rows, progress=False).published
        if step == "random":
            proc = sinks(*flags)
            time.sleep(rng.uniform(0.5, 3.0))
            proc.kill()
        else:  # the sink SIGKILLs itself right after this step of a rewrite
            proc = sinks(*flags, "--kill-at-compaction-step", step)
            wait_for(lambda p=proc: not p.alive(), timeout_s=90, interval_s=0.2,
                     what=f"the sink to be killed after compaction step {step!r}")
            assert proc.popen.returncode == -9, proc.tail()
        # whatever step the kill interrupted, readers never see a duplicate
        assert not _no_duplicates(tables, g), step
    sinks(*flags)
    expected = _topic_coords(stack, topic)
    assert expected.total() == published
    wait_for(lambda: _exactly(tables, g, expected), timeout_s=120, interval_s=0.5,
             what="every record exactly once after kills during compaction")
    wait_for(lambda: _data_files(tables, g) <= 2, timeout_s=90, interval_s=0.5,
             what="compaction to merge the small files (one day partition)")
    assert _exactly(tables, g, expected)


def test_replay_fills_the_table_without_a_sink_and_then_adds_nothing(store, stack, unique_name):
    """The issue's bug: with no sink ever run, replay said it replayed 10,000 records and the
    table held none. Now the table's offsets decide what is missing."""
    tables = _tables(stack)
    g = store.create_feature_group(customers_group(unique_name("replay"), partitions=3))
    topic = store.registry.topic_of(g.name)
    assert store.ingest(g.name, [customer(i, second=i % 3600) for i in range(10_000)], progress=False).published \
        == 10_000
    expected = _topic_coords(stack, topic)
    result = store.replay(g.name, target="offline", progress=False)
    assert (result.records, result.rows_written) == (10_000, 10_000)
    assert _exactly(tables, g, expected)
    again = store.replay(g.name, target="offline", progress=False)
    assert (again.records, again.rows_written, again.already_present) == (0, 0, 10_000)
    store.ingest(g.name, [customer(i, second=5) for i in range(100)], progress=False)
    assert store.replay(g.name, target="offline", progress=False).rows_written == 100
    assert _exactly(tables, g, _topic_coords(stack, topic))


def test_replay_racing_a_running_sink_writes_each_row_once(store, stack, sinks, unique_name):
    tables = _tables(stack)
    g = store.create_feature_group(customers_group(unique_name("race"), partitions=2))
    topic = store.registry.topic_of(g.name)
    store.ingest(g.name, [customer(i, second=i % 3600) for i in range(8_000)], progress=False)
    sinks("--max-records", "200", "--max-age-s", "0.3", "--compact-every-s", "0")
    result = store.replay(g.name, target="offline", progress=False)  # while the sink writes the same rows
    expected = _topic_coords(stack, topic)
    wait_for(lambda: _exactly(tables, g, expected), timeout_s=120, interval_s=0.5,
             what="each row once with a replay and a sink writing together")
    assert 0 <= result.rows_written <= 8_000


def test_local_path_store(store, stack, sinks, unique_name, tmp_path):
    local = replace(stack, offline_uri=str(tmp_path / "offline"))
    with FeatureStore(local) as lstore:
        g = lstore.create_feature_group(customers_group(unique_name("local"), partitions=1))
        lstore.ingest(g.name, [customer(i, second=i) for i in range(300)], progress=False)
    assert g.offline_uri.startswith(str(tmp_path))
    sinks("--max-age-s", "0.5", "--compact-every-s", "0", config=local)
    expected = _topic_coords(stack, store.registry.topic_of(g.name))
    tables = _tables(local)
    wait_for(lambda: _exactly(tables, g, expected), timeout_s=60, what="rows under the local path")
    assert tables.existing(g).location().startswith(str(tmp_path))


def test_s3_down_keeps_retrying_without_committing(store, stack, sinks, unique_name):
    from featurestream.stack.ports import free_port

    down = replace(stack, s3_endpoint_url=f"http://127.0.0.1:{free_port()}")
    g = store.create_feature_group(customers_group(unique_name("s3down"), partitions=1))
    topic = store.registry.topic_of(g.name)
    store.ingest(g.name, [customer(i) for i in range(20)], progress=False)
    proc = sinks("--max-age-s", "0.5", "--compact-every-s", "0", config=down)
    wait_for(lambda: "is the S3 server up" in proc.log.read_text(errors="replace"), timeout_s=90, interval_s=0.5,
             what="a clear storage error in the sink's log")
    assert proc.alive()
    assert _lag(stack, topic) == 20  # nothing committed while S3 is down
