"""Dead letters can be redriven (issue 17, part 3), against real Kafka, Redis, S3 and running workers.

Bad bytes and records of a group that does not exist yet are written straight to a group topic
while a processor and a sink run; both park them. `deadletter list` shows them with reasons. The
group is then created and `deadletter redrive` re-publishes the good ones: each lands exactly once
online and exactly once in the offline table, the bad ones are reported still failing, and a
second redrive re-publishes nothing. A redrive interrupted between publishing a record and
recording it is finished by the next one without a second copy.
"""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from dataclasses import replace

import orjson
import pytest
from confluent_kafka import Producer

from featurestream.config import Config
from featurestream.sdk import FeatureStore
from schemas.errors import GroupNotFoundError
from schemas.names import group_topic, redriven_topic
from schemas.validate import validate_record
from schemas.wire import decode, encode
from sinks.offline.catalog import OfflineTables
from sinks.offline.table_commit import recorded_offsets
from streams.admin import admin_client, ensure_topic
from streams.deadletter import DeadLetters
from streams.deadletter_records import SourceRef
from streams.publisher import Publisher
from streams.redrive import ALREADY, FAILING, REDRIVEN, WOULD_REDRIVE
from streams.redrive_plan import PUBLISHING, Marker, encode_marker, encode_redriven, marker_key, redrive_of
from streams.route import Poison, RawMessage
from tests.integration.helpers import customer, customers_group, read_topic
from tests.integration.procs import Proc, stack_env
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration

GOOD = (1, 2, 3)


@pytest.fixture(params=["confluent", "faust"])
def engine(request) -> str:
    return request.param


@pytest.fixture
def workers(stack, tmp_path, engine):
    """A processor of ``engine`` and a sink, as real subprocesses."""
    procs = [Proc(stack, ["process", "--engine", engine, "--metrics-port", "0", "--log-level", "warning"],
                  tmp_path / "processor.log"),
             Proc(stack, ["sink", "--metrics-port", "0", "--log-level", "warning", "--max-age-s", "1",
                          "--compact-every-s", "0"], tmp_path / "sink.log")]
    yield procs
    for proc in procs:
        proc.stop()


def cli(stack: Config, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "featurestream.cli", *args], env=stack_env(stack),
                          capture_output=True, text=True, timeout=180)


def _dead_letters_of(store: FeatureStore, name: str) -> list:
    try:
        return store.dead_letters(name, progress=False)
    except GroupNotFoundError:
        return []


def _offline_ids(tables: OfflineTables, g) -> Counter:
    table = tables.existing(g)
    if table is None or table.current_snapshot() is None:
        return Counter()
    return Counter(table.scan(selected_fields=("customer_id",)).to_arrow()["customer_id"].to_pylist())


def _table_caught_up(tables: OfflineTables, g, topic: str, ends: dict[int, int]) -> bool:
    table = tables.existing(g)
    return table is not None and recorded_offsets(table) == {(topic, p): e for p, e in ends.items()}


def _topic_ends(stack: Config, topic: str) -> dict[int, int]:
    ends: dict[int, int] = {}
    for m in read_topic(stack, topic):
        ends[m.partition()] = max(ends.get(m.partition(), 0), m.offset() + 1)
    return ends


def test_dead_letters_are_listed_then_redriven_exactly_once_and_a_second_redrive_does_nothing(
        store, stack, workers, unique_name, engine):
    name = unique_name("redrive")
    topic = group_topic(stack.topic_prefix, name)
    # An unknown group is a clear error, before anything names it.
    with pytest.raises(GroupNotFoundError, match=name):
        store.dead_letters(name, progress=False)
    unknown = cli(stack, "deadletter", "list", "--group", name)
    assert unknown.returncode == 1 and f"feature group '{name}' does not exist" in unknown.stderr, unknown

    # The group's topic exists before the group does: what lands there is parked. The sink and the
    # confluent processor consume every topic named like a group's; the faust processor only those
    # of registered groups, so it reads this topic from its start once the group exists (applying the
    # good records itself, parking the rest): redrive then re-publishes for the offline store only.
    online_parks_unknown = engine == "confluent"
    ensure_topic(admin_client(stack.kafka_bootstrap), topic, partitions=1, replication_factor=1)
    definition = customers_group(name, partitions=1)
    p = Producer({"bootstrap.servers": stack.kafka_bootstrap})
    sent: dict[str, int] = {}

    def produce(label: str, key: bytes, value: bytes, headers=None) -> None:
        def delivered(err, msg) -> None:
            assert err is None, err
            sent[label] = msg.offset()

        p.produce(topic, key=key, value=value, headers=headers, on_delivery=delivered)

    produce("garbage", b"junk", b"\xff\xfe not json at all")
    produce("not-a-record", b"x", orjson.dumps({"hello": "world"}), [("fs-format", b"json/1")])
    bad_age = {"op": "put", "id": "c9", "event_time_ns": 1_924_992_000_000_000_000,
               "record": {**customer(9), "age": "old"}}
    produce("bad-age", b"c9", orjson.dumps(bad_age), [("fs-format", b"json/1")])
    originals = {}
    for i in GOOD:
        msg = validate_record(definition, customer(i), api_invocation_time_ns=1_700_000_000_000_000_000 + i)
        originals[f"c{i}"] = msg
        produce(f"c{i}", *encode(msg))
    assert p.flush(30) == 0 and len(sent) == 6
    good = {sent[f"c{i}"] for i in GOOD}
    bad = set(sent.values()) - good

    def parked() -> Counter:
        return Counter((dl.source.offset, dl.stage) for dl in _dead_letters_of(store, name))

    early_parks = Counter({(o, s): 1 for o in sent.values()
                           for s in (("online", "offline") if online_parks_unknown else ("offline",))})
    wait_for(lambda: parked() == early_parks, timeout_s=120, what=f"the dead letters {sorted(early_parks)}")
    dls = store.dead_letters(name, progress=False)
    assert all(f"unknown feature group {name!r}" in dl.reason for dl in dls)

    # Before the group exists nothing passes.
    early = store.redrive(name, dry_run=True, progress=False)
    assert early.count(FAILING) == len(dls) and early.published == 0
    assert all("still does not exist" in o.reason for o in early.outcomes)

    g = store.create_feature_group(definition)
    tables = OfflineTables.open(stack.catalog(), stack.topic_prefix, stack.storage_options())
    # Once both workers know the group, garbage is parked for being garbage.
    store.put_record(name, customer(50), wait_online=True, wait_timeout_s=60)
    wait_for(lambda: _offline_ids(tables, g) == Counter({"c50": 1}), timeout_s=120, what="c50 offline")
    produce("garbage-2", b"junk2", b"\x00\x01 binary")
    assert p.flush(30) == 0
    bad.add(sent["garbage-2"])
    all_parks = early_parks + Counter({(sent["garbage-2"], "online"): 1, (sent["garbage-2"], "offline"): 1})
    if not online_parks_unknown:
        all_parks += Counter({(o, "online"): 1 for o in bad - {sent["garbage-2"]}})
    wait_for(lambda: parked() == all_parks, timeout_s=60, what=f"the dead letters {sorted(all_parks)}")
    dls = store.dead_letters(name, progress=False)

    # deadletter list: a line per dead letter with its reason; JSON; --since
    listed = cli(stack, "deadletter", "list", "--group", name)
    assert listed.returncode == 0, listed.stderr
    lines = [ln for ln in listed.stdout.splitlines()[1:] if ln.strip()]
    assert len(lines) == len(dls) and all(name in ln for ln in lines), listed.stdout
    for dl, line in zip(dls, lines, strict=True):
        assert f"0@{dl.source.offset} " in line and f" {dl.stage} " in line and line.endswith(dl.reason)
    assert sum("unknown feature group" in ln for ln in lines) == (12 if online_parks_unknown else 6)
    assert sum("not UTF-8 JSON" in ln for ln in lines) == (2 if online_parks_unknown else 3)
    assert f"{len(dls)} dead letter(s)" in listed.stderr
    as_json = orjson.loads(cli(stack, "deadletter", "list", "--group", name, "--json", "--since", "1h").stdout)
    assert Counter((d["source_offset"], d["stage"]) for d in as_json) == all_parks
    assert all(d["time"].endswith("Z") and d["source_partition"] == 0 for d in as_json)
    future = cli(stack, "deadletter", "list", "--group", name, "--since", "2099-01-01T00:00:00Z")
    assert future.returncode == 0 and future.stdout.strip() == f"no dead letters of {name} since 2099-01-01T00:00:00Z"

    good_dls = sum(n for (o, _), n in all_parks.items() if o in good)  # 6 (both stages) or 3 (offline)
    bad_dls = sum(n for (o, _), n in all_parks.items() if o in bad)    # 8
    dry = store.redrive(name, dry_run=True, progress=False)
    assert (dry.count(WOULD_REDRIVE), dry.count(FAILING), dry.published) == (good_dls, bad_dls, 0)
    assert _topic_ends(stack, topic) == {0: 8}, "a dry run publishes nothing"

    done = cli(stack, "deadletter", "redrive", "--group", name, "--json")
    assert done.returncode == 0, done.stderr
    report = orjson.loads(done.stdout)
    assert report["published"] == 3, report
    assert report["counts"] == {"redriven": good_dls, "would-redrive": 0, "failing": bad_dls, "not-needed": 0,
                                "already-redriven": 0}
    failing = {d["source_offset"]: d["failure"] for d in report["dead_letters"] if d["status"] == FAILING}
    assert set(failing) == bad
    assert "not UTF-8 JSON" in failing[sent["garbage"]] and "not UTF-8 JSON" in failing[sent["garbage-2"]]
    assert "'id'" in failing[sent["not-a-record"]]
    assert "age" in failing[sent["bad-age"]]
    landed = {tuple(d["redriven_to"]) for d in report["dead_letters"] if d["status"] == REDRIVEN}
    assert len(landed) == 3, "one re-published record per source record, though both stages parked each"

    # Each good record once online, exactly as it was put, and once offline.
    for i in GOOD:
        wait_for(lambda i=i: store.get_record(name, f"c{i}") == customer(i), timeout_s=60,
                 what=f"c{i} online as put")
    ends = _topic_ends(stack, topic)
    assert ends == {0: 11}
    wait_for(lambda: _table_caught_up(tables, g, topic, ends), timeout_s=120,
             what="the offline table committed up to the topic's end")
    assert _offline_ids(tables, g) == Counter({f"c{i}": 1 for i in (*GOOD, 50)})
    # The re-published records keep identity, carry the current version and their source, and go
    # only to the stores that parked them.
    stores = {"OnlineStore", "OfflineStore"} if online_parks_unknown else {"OfflineStore"}
    redriven = [m for m in read_topic(stack, topic) if m.offset() >= 8]
    assert {(0, m.offset()) for m in redriven} == landed
    for m in redriven:
        h = dict(m.headers())
        original = originals[m.key().decode()]
        again_msg = decode(m.key(), m.value(), m.headers())
        assert redrive_of(m.headers()) == SourceRef(topic, 0, sent[m.key().decode()])
        assert h["fs-api-invocation-time"] == str(original.api_invocation_time_ns).encode()
        assert h["fs-schema-version"] == str(g.version).encode()
        assert (again_msg.id, again_msg.event_time_ns, again_msg.record) == \
            (original.id, original.event_time_ns, original.record)
        assert again_msg.target_stores == stores

    # Redriving twice is harmless.
    again = store.redrive(name, progress=False)
    assert (again.published, again.count(REDRIVEN), again.count(ALREADY), again.count(FAILING)) == \
        (0, 0, good_dls, bad_dls)
    text = cli(stack, "deadletter", "redrive", "--group", name)
    assert text.returncode == 0 and "redriven " not in text.stdout, text
    assert f"{good_dls} already-redriven" in text.stderr, text
    assert _topic_ends(stack, topic) == {0: 11}, "the topic did not grow, so neither store can change"


def test_a_redrive_interrupted_after_publishing_is_finished_without_a_second_copy(stack, unique_name):
    """The state a redrive killed between its two markers leaves, made with the real writers: for
    source A the ``publishing`` marker and the re-published record (killed before ``done``), for
    source B only the ``publishing`` marker (killed before publishing). The next redrive sends B
    once and A never again."""
    with FeatureStore(stack) as store:
        g = store.create_feature_group(customers_group(unique_name("crash"), partitions=1))
        topic = store.registry.topic_of(g.name)
        prefix = stack.topic_prefix
        publisher = Publisher(stack.kafka_bootstrap)
        try:
            # Two records that were parked (by the processor) while their group was unknown.
            raws = []
            for i in (1, 2):
                key, value, headers = encode(validate_record(g, customer(i), api_invocation_time_ns=10 + i))
                raws.append(RawMessage(topic, 0, 100 + i, key, value, headers))
            DeadLetters(publisher, prefix, "online").send([Poison(r, "unknown feature group") for r in raws])
            a, b = (SourceRef(topic, 0, 101), SourceRef(topic, 0, 102))
            ensure_topic(admin_client(stack.kafka_bootstrap), redriven_topic(prefix), partitions=1,
                         replication_factor=1, config={"cleanup.policy": "compact"})
            intent = Marker(PUBLISHING, topic, {0: 0})
            publisher.publish_many(redriven_topic(prefix), [(marker_key(s, "OnlineStore"), encode_marker(intent),
                                                             None) for s in (a, b)]).wait(publisher)
            msg = validate_record(g, customer(1), target_stores=["OnlineStore"], api_invocation_time_ns=11)
            publisher.publish_sync(topic, *encode_redriven(msg, a))
        finally:
            publisher.close()

        report = store.redrive(g.name, progress=False)
        by_source = {o.dead_letter.source: o for o in report.outcomes}
        assert by_source[a].status == ALREADY and by_source[a].redriven_to == (0, 0)
        assert by_source[b].status == REDRIVEN and report.published == 1
        copies = Counter(redrive_of(m.headers()) for m in read_topic(stack, topic))
        assert copies == Counter({a: 1, b: 1})
        again = store.redrive(g.name, progress=False)
        assert again.published == 0 and again.count(ALREADY) == 2
        assert Counter(redrive_of(m.headers()) for m in read_topic(stack, topic)) == copies


def test_no_dead_letter_topic_yet_reads_as_no_dead_letters(stack, unique_name):
    fresh = replace(stack, topic_prefix=unique_name("fresh-prefix"))
    listed = cli(fresh, "deadletter", "list")
    assert listed.returncode == 0 and listed.stdout.strip() == "no dead letters", listed
    redriven = cli(fresh, "deadletter", "redrive", "--dry-run")
    assert redriven.returncode == 0 and redriven.stdout.strip() == "no dead letters", redriven
