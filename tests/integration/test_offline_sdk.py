"""The offline store through the front doors: SDK query/snapshot/point-in-time join and the CLI."""

from __future__ import annotations

import random
import subprocess
import sys
import time

import orjson
import pandas as pd
import pytest
import sqlglot

from featurestream.sdk import FeatureStore
from schemas.errors import GroupNotFoundError
from schemas.ordering import version_key, wins
from schemas.validate import compile_validator
from schemas.wire import encode
from tests.integration.helpers import customer, customers_group, read_topic
from tests.integration.procs import Proc, stack_env
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration


def test_sdk_and_cli_read_what_the_sink_wrote(store, stack, tmp_path, unique_name):
    g = store.create_feature_group(customers_group(unique_name("off")))
    rows = [customer(i % 20, second=i, age=i) for i in range(100)]
    assert store.ingest(g.name, rows, progress=False).published == 100
    store.delete_record(g.name, "c3", "2031-01-01T01:00:00Z")
    before_sink = time.time()
    time.sleep(0.01)
    sink = Proc(stack, ["sink", "--metrics-port", "0", "--max-age-s", "1"], tmp_path / "sink.log")
    try:
        wait_for(lambda: store.query(f'SELECT count(*) AS n FROM "{g.name}"').column("n")[0].as_py() == 101,
                 timeout_s=120, what=f"the sink to write 101 rows\n{sink.tail()}")
    finally:
        sink.stop()
    snap = store.snapshot(g.name).to_pandas()
    assert sorted(snap["customer_id"]) == sorted(f"c{i}" for i in range(20) if i != 3)
    assert snap.set_index("customer_id").loc["c5", "age"] == 85  # latest of c5: second 85
    as_of = store.snapshot(g.name, as_of="2031-01-01T00:00:30Z").to_pandas().set_index("customer_id")
    assert as_of.loc["c5", "age"] == 25 and "c3" in as_of.index  # before the delete
    entity = pd.DataFrame({"customer_id": ["c5", "c5", "c3", "nobody"],
                           "event_time": pd.to_datetime(["2031-01-01T00:00:30Z", "2031-01-01T00:00:05Z",
                                                         "2031-01-01T02:00:00Z", "2031-01-01T02:00:00Z"])})
    training = store.get_historical_features(entity, [f"{g.name}:age"]).to_pandas()
    assert training["customer_id"].tolist() == ["c5", "c5", "c3", "nobody"]
    assert training["age"].tolist()[:2] == [25, 5]
    assert training["age"].isna().tolist()[2:] == [True, True]  # deleted; no history
    with pytest.raises(GroupNotFoundError):
        store.get_historical_features(entity, ["no-such-group:age"])
    env = stack_env(stack)
    run = [sys.executable, "-m", "featurestream.cli"]
    out = subprocess.run([*run, "query", f'SELECT customer_id, age FROM "{g.name}" WHERE customer_id = \'c1\' '
                          "ORDER BY age", "--format", "json"], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert [r["age"] for r in orjson.loads(out.stdout)] == [1, 21, 41, 61, 81]
    # time travel by commit: before the sink's first commit the table held nothing
    count = f'SELECT count(*) AS n FROM "{g.name}"'
    then = subprocess.run([*run, "query", count, "--format", "json", "--as-of-commit", str(before_sink)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert then.returncode == 0, then.stderr
    assert orjson.loads(then.stdout) == [{"n": 0}]
    assert store.query(count, as_of_commit=time.time())["n"].to_pylist() == [101]
    snap_then = subprocess.run([*run, "snapshot", g.name, "--as-of-commit", "2000-01-01T00:00:00Z", "--format", "json"],
                               env=env, capture_output=True, text=True, timeout=120)
    assert snap_then.returncode == 0 and orjson.loads(snap_then.stdout) == [], snap_then.stderr
    bad = subprocess.run([*run, "query", "SELEC nonsense"], env=env, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and "error" in bad.stderr.lower()
    # engines read the Iceberg table through a catalog (never data/ directly); each block ends in a
    # SELECT that parses in that engine's dialect and names the table featurestream wrote
    ddl = subprocess.run([*run, "ddl", g.name], env=env, capture_output=True, text=True, timeout=60)
    assert ddl.returncode == 0, ddl.stderr
    # Spark's block also shows its time travel: the snapshots (with the Kafka offsets each recorded)
    # and VERSION AS OF a snapshot id (a placeholder, so not parsed here).
    assert "summary['featurestream.kafka-offsets']" in ddl.stdout and "VERSION AS OF <snapshot_id>" in ddl.stdout
    selects = [line for line in ddl.stdout.splitlines() if line.startswith("SELECT * FROM") and "VERSION AS OF" not in line]
    assert len(selects) == 3
    for select, dialect in zip(selects, ("spark", "trino", "athena"), strict=True):
        table = sqlglot.parse_one(select, read=dialect).find(sqlglot.exp.Table)
        assert table is not None and table.name == g.name and table.db == stack.topic_prefix, (dialect, select)
    jdbc = stack.catalog().replace("sqlite:///", "jdbc:sqlite:")
    assert f"uri={jdbc}" in ddl.stdout and "jdbc.schema-version=V1" in ddl.stdout
    assert store.offline_tables().existing(g).metadata_location in ddl.stdout  # what Glue registers
    assert "year=" not in ddl.stdout


def _next_millisecond() -> None:
    """Return once the clock has entered a new millisecond. The write just acknowledged was appended
    by a broker on this machine's clock, so the next write gets a later LogAppendTime: the two
    producers' versions of an id never share a millisecond, whatever the load (a loaded run once
    left too few ids with distinct broker times to check the SPEC's query)."""
    now = time.time_ns() // 1_000_000
    while time.time_ns() // 1_000_000 == now:
        pass


def test_equal_event_times_from_two_producers_pick_one_version_everywhere(store, stack, tmp_path, unique_name):
    """Two producers write the same ids at the same event time; one's clock runs an hour ahead,
    so its api_invocation_time (had the client's clock been kept) would win the SPEC's tie-break
    even where it wrote first. Online, snapshot, the SPEC's own SQL and the point-in-time join
    must all pick the version that schemas/ordering.py picks, computed here from the topic."""
    g = store.create_feature_group(customers_group(unique_name("tie")))
    topic = store.registry.topic_of(g.name)
    validator = compile_validator(g)
    rng = random.Random(5)
    ids = [f"c{i}" for i in range(12)]
    with FeatureStore(stack) as other:
        for _ in range(3):
            for rid in ids:
                for who in rng.sample(["ahead", "local"], 2):  # which producer writes first varies
                    rec = {**customer(int(rid[1:])), "customer_id": rid, "age": rng.randrange(1000)}
                    ahead = who == "ahead"
                    msg = validator.validate(rec, api_invocation_time_ns=time.time_ns() + (3600 * 10**9 if ahead
                                                                                          else 0))
                    (other if ahead else store).publisher.publish_sync(topic, *encode(msg))
                    _next_millisecond()
    # Ground truth from the topic alone: the version key's winner per id, and the broker times.
    latest: dict[str, tuple] = {}
    for m in read_topic(stack, topic):
        value = orjson.loads(m.value())
        key = version_key(value["event_time_ns"], m.partition(), m.offset())
        if wins(key, latest[value["id"]][0] if value["id"] in latest else None):
            latest[value["id"]] = (key, value["record"]["age"])
    want = {rid: age for rid, (_, age) in latest.items()}
    procs = [Proc(stack, ["process", "--metrics-port", "0", "--log-level", "warning"], tmp_path / "p.log"),
             Proc(stack, ["sink", "--metrics-port", "0", "--max-age-s", "1"], tmp_path / "sink.log")]
    try:
        wait_for(lambda: {rid: (store.get_record(g.name, rid) or {}).get("age") for rid in ids} == want,
                 timeout_s=120, what=f"the processor to converge\n{procs[0].tail()}")
        wait_for(lambda: store.query(f'SELECT count(*) AS n FROM "{g.name}"').column("n")[0].as_py() == 72,
                 timeout_s=120, what=f"the sink to write 72 rows\n{procs[1].tail()}")
    finally:
        for p in procs:
            p.stop()
    snap = store.snapshot(g.name).to_pandas().set_index("customer_id")["age"].to_dict()
    assert snap == want
    # The SPEC's query as the reference writes it: ties on api_invocation_time, then write_time.
    # api_invocation_time is the broker's append time (LogAppendTime), which follows the writes;
    # where two writes share a millisecond the SPEC leaves the order to write_time, so only ids
    # whose versions' broker times differ are held to it.
    spec = store.query(f'SELECT customer_id, age, api_invocation_time FROM (SELECT *, row_number() OVER '
                       f'(PARTITION BY customer_id ORDER BY event_time DESC, api_invocation_time DESC, '
                       f'write_time DESC) AS rk FROM "{g.name}") WHERE rk = 1').to_pylist()
    times = store.query(f'SELECT customer_id, api_invocation_time, count(*) AS n FROM "{g.name}" '
                        f"GROUP BY ALL HAVING n > 1").to_pylist()
    tied = {r["customer_id"] for r in times if any(s["customer_id"] == r["customer_id"] and
                                                   s["api_invocation_time"] == r["api_invocation_time"]
                                                   for s in spec)}
    checked = {r["customer_id"]: r["age"] for r in spec if r["customer_id"] not in tied}
    assert len(checked) >= len(ids) // 2, f"too many same-millisecond ties to check: {sorted(tied)}"
    assert checked == {rid: want[rid] for rid in checked}
    entity = pd.DataFrame({"customer_id": ids, "event_time": pd.to_datetime(["2031-01-02T00:00:00Z"] * len(ids))})
    pit = store.get_historical_features(entity, [f"{g.name}:age"]).to_pandas()
    assert dict(zip(pit["customer_id"], pit["age"], strict=True)) == want


def test_purge_unregisters_the_table_and_deletes_its_files(store, stack, unique_name):
    from sinks.offline.fs import open_filesystem

    g = store.create_feature_group(customers_group(unique_name("purge"), partitions=1))
    store.ingest(g.name, [customer(i, second=i) for i in range(50)], progress=False)
    assert store.replay(g.name, target="offline", progress=False).rows_written == 50  # no sink needed
    tables = store.offline_tables()
    assert tables.existing(g) is not None
    fs, root = open_filesystem(g.offline_uri, stack.storage_options())
    assert fs.exists(root)
    store.delete_feature_group(g.name, purge=True)
    assert tables.existing(g) is None
    assert tables.identifier(g) not in tables.catalog.list_tables(stack.topic_prefix)
    fs.invalidate_cache()
    assert not fs.exists(root)


def test_purge_deletes_a_group_whose_table_lost_its_files(store, stack, unique_name):
    """A table whose files are gone under its catalog entry (deleted by hand, or by the purge race of
    2026-12-04) cannot be loaded, but its group can still be deleted with its data."""
    from sinks.offline.errors import OfflineStorageError
    from sinks.offline.fs import open_filesystem

    g = store.create_feature_group(customers_group(unique_name("lost"), partitions=1))
    store.ingest(g.name, [customer(i, second=i) for i in range(5)], progress=False)
    assert store.replay(g.name, target="offline", progress=False).rows_written == 5
    fs, root = open_filesystem(g.offline_uri, stack.storage_options())
    fs.rm(root, recursive=True)
    tables = store.offline_tables()
    with pytest.raises(OfflineStorageError, match="has lost its metadata"):
        tables.existing(g)
    store.delete_feature_group(g.name, purge=True)
    assert tables.identifier(g) not in tables.catalog.list_tables(stack.topic_prefix)
