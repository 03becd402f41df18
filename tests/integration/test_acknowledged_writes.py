"""An acknowledged write is applied by every store it targets (issue 17's proof).

With the processor and the sink running, the control plane changes the group (a feature added,
the TTL changed) and records are published at once, from every door: the SDK, the CLI, HTTP
PutRecord/BatchWriteRecord (boto3), ingest from memory, and file ingest of CSV, JSON Lines and
Parquet, read by the ingest's worker processes (which get the group's definition when they start).
Every record must reach the online store and the offline table, with exact values, and nothing may
be dead-lettered. Ground truth is the topic, read independently with plain confluent-kafka.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import orjson
import pytest

from featurestream.sdk import FeatureStore
from featurestream.stack.ports import free_port
from schemas.errors import FeatureStoreError
from schemas.eventtime import format_iso, parse_event_time
from schemas.group import FeatureGroup
from schemas.types import FeatureDefinition as F
from tests.integration.helpers import customer, customers_group, dead_letters, read_topic
from tests.integration.procs import Proc, stack_env, worker_ready
from tests.support.http_api import boto_clients, server_env, start_server, stop_server, wire_record
from tests.support.offline import table_coordinates
from tests.support.online_oracle import expected_online_state, online_state
from tests.support.values import write_csv, write_jsonl, write_parquet
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration
NS = 1_000_000_000


@pytest.fixture(params=["confluent", "faust"])
def engine(request) -> str:
    return request.param


@pytest.fixture
def workers(stack, tmp_path, engine):
    started: list[Proc] = []

    def start(kind: str) -> Proc:
        args = (["process", "--engine", engine] if kind == "process"
                else ["sink", "--max-age-s", "3"])
        proc = Proc(stack, [*args, "--metrics-port", str(free_port()), "--log-level", "info"],
                    tmp_path / f"{kind}-{len(started)}.log")
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()


@pytest.fixture
def http(stack, tmp_path):
    env = server_env(stack)
    server, url = start_server(env, tmp_path)
    yield {"url": url, "key": env["AWS_ACCESS_KEY_ID"], "secret": env["AWS_SECRET_ACCESS_KEY"]}
    stop_server(server)


def _cli(stack, *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "featurestream.cli", *args], env=stack_env(stack),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"featurestream {' '.join(args)} failed: {done.stderr}"
    return done.stdout


def _publish_from_every_door(store: FeatureStore, stack, http_api: dict, group: str, second: int,
                             extra: dict, folder: Path) -> None:
    """Sixteen records, two per door (file ingest: CSV, JSON Lines and Parquet, each read in the
    ingest's worker processes), half of them using ``extra`` (the features just added)."""
    _, runtime = boto_clients(http_api)
    rows = [{**customer(i, second=second), **(extra if i % 2 == 0 else {})} for i in range(16)]
    store.put_record(group, rows[0])
    store.put_record(group, rows[1])
    _cli(stack, "put", group, orjson.dumps(rows[2]).decode())
    _cli(stack, "put", group, orjson.dumps(rows[3]).decode())
    runtime.put_record(FeatureGroupName=group, Record=wire_record(rows[4]))
    runtime.put_record(FeatureGroupName=group, Record=wire_record(rows[5]))
    answer = runtime.batch_write_record(Entries=[{"FeatureGroupName": group, "Record": wire_record(r)} for r in rows[6:8]])
    assert answer["Errors"] == [] and answer["UnprocessedEntries"] == [], answer
    assert store.ingest(group, rows[8:10], progress=False).published == 2
    current = store.describe_feature_group(group)
    in_files = [{name: row.get(name) for name in current.feature_names} for row in rows[10:]]
    files = (write_csv(folder / f"{second}.csv", current, in_files[:2]),
             write_jsonl(folder / f"{second}.jsonl", rows[12:14]),
             write_parquet(folder / f"{second}.parquet", current, in_files[4:]))
    for path in files:
        result, _ = store.ingest_file(group, str(path), max_workers=2, progress=False)
        assert (result.published, result.rejected) == (2, []), (path.name, result.summary())


def _offline_matches_topic(store: FeatureStore, stack, group) -> bool:
    topic = store.registry.topic_of(group.name)
    messages = read_topic(stack, topic)
    expected = Counter((topic, m.partition(), m.offset()) for m in messages)
    tables = store.offline_tables()
    if table_coordinates(tables, group) != expected:
        return False
    # Values too: each row's features equal its message's record, exactly.
    rows = tables.existing(group).scan().to_arrow().to_pylist()
    by_coords = {(r["_kafka_partition"], r["_kafka_offset"]): r for r in rows}
    for m in messages:
        record = orjson.loads(m.value())["record"]
        row = by_coords[(m.partition(), m.offset())]
        for name, value in record.items():
            if name != "event_time":
                assert row[name] == value, (name, row[name], value)
    return True


def _settled(store: FeatureStore, stack, group) -> bool:
    expected = expected_online_state(stack, store.registry.topic_of(group.name))
    latest = store.groups.get(group.name, fresh=True)  # reads every feature, the ones just added too
    return online_state(store, latest, sorted(expected)) == expected


def test_writes_right_after_a_control_plane_change_reach_every_store(store, stack, workers, http, unique_name,
                                                                     tmp_path, engine):
    g = store.create_feature_group(customers_group(unique_name("acked"), partitions=3))
    first = workers("process")
    sink = workers("sink")
    wait_for(lambda: worker_ready(first.metrics_port()) and worker_ready(sink.metrics_port()), timeout_s=90,
             what="the processor and the sink to be ready")
    store.put_record(g.name, customer(99), wait_online=True, wait_timeout_s=60)
    # Warm every worker's view of the group: the change below must reach views that are not empty.
    _publish_from_every_door(store, stack, http, g.name, 1, {}, tmp_path)
    wait_for(lambda: _settled(store, stack, g), timeout_s=90, what="the first records online")

    # 1. A feature added with the CLI, then writes at once from every door, with and without it.
    added = tmp_path / "added.json"
    added.write_text(orjson.dumps([{"FeatureName": "w", "FeatureType": "Integral"},
                                   {"FeatureName": "note", "FeatureType": "String"}]).decode())
    _cli(stack, "group", "update", g.name, "--add", str(added))
    _publish_from_every_door(store, stack, http, g.name, 2, {"w": 2**63 - 1, "note": "added \u00e9"}, tmp_path)

    # 2. The TTL changed, then writes at once: they expire by the new TTL.
    _cli(stack, "group", "update", g.name, "--ttl", "30000d")
    _publish_from_every_door(store, stack, http, g.name, 3, {"w": -(2**63)}, tmp_path)

    # 3. A second processor that starts after the change, and a third change while both run, made
    # the way the SageMaker SDKs make it (UpdateFeatureGroup's FeatureAdditions, over HTTP).
    second = workers("process")
    wait_for(lambda: worker_ready(second.metrics_port()), timeout_s=90, what="the second processor to be ready")
    control, _ = boto_clients(http)
    control.update_feature_group(FeatureGroupName=g.name,
                                 FeatureAdditions=[{"FeatureName": "late", "FeatureType": "Fractional"}])
    _publish_from_every_door(store, stack, http, g.name, 4, {"late": 0.1, "w": 7}, tmp_path)

    group = store.describe_feature_group(g.name)
    assert group.version == 4
    wait_for(lambda: _settled(store, stack, group), timeout_s=120, what="every record online")
    wait_for(lambda: _offline_matches_topic(store, stack, group), timeout_s=180,
             what="every record in the offline table, once, with its values")
    expected = expected_online_state(stack, store.registry.topic_of(g.name))
    assert expected["c0"]["late"] == 0.1 and expected["c0"]["w"] == 7
    got = store.get_record(g.name, "c1", with_expires_at=True)
    ttl_ns = 30000 * 86400 * NS
    assert got["ExpiresAt"] is not None
    assert parse_event_time(got["ExpiresAt"]) == parse_event_time(customer(1, second=4)["event_time"]) + ttl_ns
    topic = store.registry.topic_of(g.name)
    assert dead_letters(stack, topic) == [], "an acknowledged record was dead-lettered"
    for proc in (first, second, sink):
        assert proc.alive(), proc.tail()


def _txn_group(name: str) -> FeatureGroup:
    return FeatureGroup(name, "txn_id", "event_time",
                        (F("txn_id", "String"), F("event_time", "String"), F("card", "String"), F("qty", "Integral")),
                        partitions=3)


def _card_totals(stack, topic: str) -> dict[str, dict]:
    """Ground truth from the topic, read independently: per card, the count, sum and min of qty over
    every put (event times rise, so none is late)."""
    out: dict[str, dict] = {}
    for m in read_topic(stack, topic):
        v = orjson.loads(m.value())
        if v["op"] != "put":
            continue
        r = v["record"]
        t = out.setdefault(r["card"], {"count": 0, "sum": 0, "min": None})
        t["count"] += 1
        t["sum"] += r["qty"]
        t["min"] = r["qty"] if t["min"] is None else min(t["min"], r["qty"])
    return out


def _aggregates_differ(store: FeatureStore, agg: str, want: dict[str, dict], names: tuple[str, ...]) -> dict:
    """The cards whose aggregates (``names`` of count, sum, min) differ from ``want``: card -> (got, want)."""
    bad = {}
    for card, t in want.items():
        got = store.get_record(agg, card) or {}
        mine = {n: got.get(f"qty_{n}_lifetime") for n in names}
        theirs = {n: t[n] for n in names}
        if mine != theirs:
            bad[card] = (mine, theirs)
    return bad


def test_an_aggregation_group_created_deleted_and_created_again_while_the_workers_run(store, stack, workers,
                                                                                        unique_name, tmp_path,
                                                                                        engine):
    """With the processor and the sink running and writes flowing: an aggregation group is created
    (with its backfill), its source gets a feature, the aggregation group is deleted (with its data,
    as DeleteFeatureGroup does) and created again under the same name with other aggregates. Every
    acknowledged write must be in the source's online and offline stores, and the aggregation
    group must hold every event of its source exactly once, nothing of its first life."""
    import random
    import threading

    src = store.create_feature_group(_txn_group(unique_name("txn")))
    topic = store.registry.topic_of(src.name)
    proc, sink = workers("process"), workers("sink")
    wait_for(lambda: worker_ready(proc.metrics_port()) and worker_ready(sink.metrics_port()), timeout_s=90,
             what="the processor and the sink to be ready")
    rng, sent, stop = random.Random(18), [0], threading.Event()
    base = parse_event_time("2031-01-01T00:00:00Z")

    def publish() -> None:  # a steady writer, 50 records at a time, each batch acknowledged
        while not stop.is_set():
            for _ in range(50):
                i = sent[0]
                sent[0] += 1
                store.put_record_async(src.name, {"txn_id": f"t{i}", "event_time": format_iso(base + i * NS),
                                                  "card": f"k{i % 25}", "qty": rng.randrange(-2**62, 2**62)})
            assert store.publisher.flush(30) == 0, "records not acknowledged"

    def written_past(n: int) -> None:
        mark = sent[0] + n
        wait_for(lambda: sent[0] >= mark, timeout_s=60, what=f"{n} more acknowledged writes")

    writer = threading.Thread(target=publish, daemon=True)
    writer.start()
    try:
        written_past(500)
        agg = unique_name("card-totals")
        store.create_aggregation_group(agg, src.name, "card", ["qty:count,sum@lifetime"])
        written_past(500)
        added = tmp_path / "added.json"
        added.write_text(orjson.dumps([{"FeatureName": "note", "FeatureType": "String"}]).decode())
        _cli(stack, "group", "update", src.name, "--add", str(added))
        written_past(500)
        store.delete_feature_group(agg, purge=True)
        written_past(300)
        store.create_aggregation_group(agg, src.name, "card", ["qty:count,min@lifetime"])
        written_past(500)
    finally:
        stop.set()
        writer.join(timeout=60)
    assert not writer.is_alive()
    store.put_record(src.name, {"txn_id": "last", "event_time": format_iso(base + sent[0] * NS), "card": "k0", "qty": 1,
                                "note": "with the added feature"})

    want = _card_totals(stack, topic)
    assert sum(t["count"] for t in want.values()) == sent[0] + 1
    try:
        wait_for(lambda: not _aggregates_differ(store, agg, want, ("count", "min")), timeout_s=120,
                 interval_s=0.5, what="the re-created aggregation group to hold every event once")
    except AssertionError:
        bad = _aggregates_differ(store, agg, want, ("count", "min"))
        raise AssertionError(f"{len(bad)} of {len(want)} cards differ, e.g. {dict(list(bad.items())[:3])}") from None
    group = store.describe_feature_group(src.name)
    wait_for(lambda: _settled(store, stack, group), timeout_s=120, what="every record online")
    wait_for(lambda: _offline_matches_topic(store, stack, group), timeout_s=180,
             what="every record in the offline table, once, with its values")
    assert dead_letters(stack, topic) == [], "an acknowledged record was dead-lettered"
    for p in (proc, sink):
        assert p.alive(), p.tail()





def test_a_group_deleted_and_created_again_under_its_name_while_the_processor_runs(store, stack, workers, unique_name,
                                                                                   tmp_path, engine):
    """A plain group is written to, deleted with its data while the processor may still hold its
    backlog, and created again under its name; the new life is written with older event times and
    the same identifiers, and gets a feature. The running processor (never restarted) must serve
    every acknowledged write of the new life, and nothing of the first life. Before topics per life,
    a running confluent processor had not picked up the re-created topic 120 s later."""
    name = unique_name("relived")
    first = store.create_feature_group(customers_group(name, partitions=3, offline=False))
    old_topic = store.registry.topic_of(first)
    proc = workers("process")
    wait_for(lambda: worker_ready(proc.metrics_port()), timeout_s=90, what="the processor to be ready")
    assert store.ingest(name, [customer(i, second=3000 + i % 600) for i in range(2000)], progress=False).published == 2000
    store.delete_feature_group(name, purge=True)  # its backlog may still be on its way
    second = store.create_feature_group(customers_group(name, partitions=2, offline=False))
    new_topic = store.registry.topic_of(second)
    assert new_topic != old_topic and new_topic.startswith(f"{old_topic}._"), new_topic
    # The same identifiers, older event times: a first life's record must never shadow them.
    assert store.ingest(name, [customer(i, second=i % 60) for i in range(300)], progress=False).published == 300
    added = tmp_path / "added.json"
    added.write_text(orjson.dumps([{"FeatureName": "note", "FeatureType": "String"}]).decode())
    _cli(stack, "group", "update", name, "--add", str(added))
    done = store.ingest(name, [{**customer(i, second=i % 60 + 1), "note": f"n{i}"} for i in range(250, 400)],
                        progress=False)
    assert done.published == 150, done.rejected[:1]

    group = store.describe_feature_group(name)
    assert len(read_topic(stack, new_topic)) == 450
    wait_for(lambda: _settled(store, stack, group), timeout_s=120, what="every record of the new life online")
    # The first life wrote c0..c1999; the second only c0..c399: none of the rest is served.
    assert [i for i in range(400, 2000, 37) if store.get_record(name, f"c{i}") is not None] == []
    assert dead_letters(stack, new_topic) == [], "an acknowledged record of the new life was dead-lettered"
    assert proc.alive(), proc.tail()


def test_a_group_purged_and_created_again_while_the_sink_holds_its_rows(store, stack, workers, unique_name, engine):
    """The sink's side of a re-created group: the first life's rows are still buffered in the running
    sink (it flushes every 3 s) when the group is deleted with its data and created again. The purge
    used to race that flush: the sink created the table again at the purged location, the purge deleted
    its files under the catalog entry, and the new life's table could not be loaded. The new life's
    table must hold every acknowledged record of the new life, once, and nothing else."""
    from sinks.offline.fs import open_filesystem

    name = unique_name("repurged")
    first = store.create_feature_group(customers_group(name, partitions=3))
    proc, sink = workers("process"), workers("sink")
    wait_for(lambda: worker_ready(proc.metrics_port()) and worker_ready(sink.metrics_port()), timeout_s=90,
             what="the processor and the sink to be ready")
    assert store.ingest(name, [customer(i, second=3000 + i % 600) for i in range(2000)], progress=False).published == 2000
    # A writer keeps publishing through the delete (its last batches fail once the group is gone): the
    # processor unsubscribes from the topic while records of it are still being fetched. That crashed
    # the faust worker once in 5 runs ("Partition is not assigned", streams/online/faust_adapter.py).
    stop, acked = threading.Event(), [0]

    def write() -> None:
        n = 2000
        while not stop.is_set():
            try:
                acked[0] += store.ingest(name, [customer(n + k, second=3600 + k) for k in range(50)],
                                         progress=False).published
            except FeatureStoreError:
                pass  # the group is deleted under the writer
            n += 50

    writer = threading.Thread(target=write, name="writer", daemon=True)
    writer.start()
    wait_for(lambda: acked[0] >= 500, timeout_s=60, what="the writer to publish")
    try:
        store.delete_feature_group(name, purge=True)
    finally:
        stop.set()
        writer.join(timeout=60)
    second = store.create_feature_group(customers_group(name, partitions=2))
    assert second.offline_uri != first.offline_uri
    assert store.ingest(name, [customer(i, second=i % 60) for i in range(300)], progress=False).published == 300

    group = store.describe_feature_group(name)
    new_topic = store.registry.topic_of(group)
    wait_for(lambda: _settled(store, stack, group), timeout_s=120, what="every record of the new life online")
    wait_for(lambda: _offline_matches_topic(store, stack, group), timeout_s=120,
             what="every record of the new life in its offline table, once, with its values")
    tables = store.offline_tables()
    assert tables.existing(group).location() == second.offline_uri
    assert tables.existing(first) is None
    fs, root = open_filesystem(second.offline_uri, stack.storage_options())
    assert fs.exists(root)
    assert dead_letters(stack, new_topic) == [], "an acknowledged record of the new life was dead-lettered"
    for p in (proc, sink):
        assert p.alive(), p.tail()
