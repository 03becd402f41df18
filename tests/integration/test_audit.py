"""`featurestream audit`: the stores against the topic, on the real stack.

Ground truth comes from the topic alone (tests/support/online_oracle.py and a plain read of the
topic), never from featurestream. Losses are caused behind the workers' backs: Redis keys deleted
and overwritten, one data file of the Iceberg table removed through pyiceberg with the table's
recorded offsets carried over (so the sink believes it wrote them).
"""

from __future__ import annotations

import json
import random
import subprocess
import sys

import orjson
import pytest
import redis

from featurestream.sdk import FeatureStore
from schemas.names import online_key
from sinks.offline.table_commit import offsets_property, recorded_offsets
from tests.integration.helpers import customer, customers_group, read_topic
from tests.integration.procs import Proc, stack_env
from tests.support.online_oracle import expected_online_state, online_state
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration


def offline_expected(stack, topic: str) -> set[tuple[int, int]]:
    """(partition, offset) of every record meant for the offline store, read from the topic directly."""
    out = set()
    for m in read_topic(stack, topic):
        try:
            value = orjson.loads(m.value())
        except orjson.JSONDecodeError:
            continue
        if "OfflineStore" in (value.get("target_stores") or ["OfflineStore"]):
            out.add((m.partition(), m.offset()))
    return out


def table_positions(store: FeatureStore, group) -> list[tuple[int, int]]:
    table = store.offline_tables().existing(group)
    if table is None or table.current_snapshot() is None:
        return []
    t = table.scan(selected_fields=("_kafka_partition", "_kafka_offset")).to_arrow()
    return list(zip(t["_kafka_partition"].to_pylist(), t["_kafka_offset"].to_pylist(), strict=True))


def run_audit(stack, *args: str) -> tuple[int, dict]:
    out = subprocess.run([sys.executable, "-m", "featurestream.cli", "audit", *args, "--json"], env=stack_env(stack),
                         capture_output=True, text=True, timeout=300)
    assert out.stdout, out.stderr
    return out.returncode, json.loads(out.stdout)


def delete_one_data_file(store: FeatureStore, group) -> list[tuple[int, int]]:
    """Remove one data file of the group's table in a snapshot that keeps the recorded offsets (behind
    the sink's back); returns the (partition, offset) of the rows it held, read from that file."""
    table = store.offline_tables().existing(group)
    tasks = list(table.scan().plan_files())
    victim = max(tasks, key=lambda t: t.file.record_count).file
    import pyarrow.parquet as pq

    with table.io.new_input(victim.file_path).open() as f:
        rows = pq.read_table(f, columns=["_kafka_partition", "_kafka_offset"])
    lost = list(zip(rows["_kafka_partition"].to_pylist(), rows["_kafka_offset"].to_pylist(), strict=True))
    keep = offsets_property(recorded_offsets(table))
    with table.transaction() as tx:
        with tx.update_snapshot(snapshot_properties=keep).overwrite() as ow:
            ow.delete_data_file(victim)
    return lost


def test_audit_finds_online_and_offline_losses_and_counts_records_in_flight_apart(stack, tmp_path, unique_name):
    with FeatureStore(stack) as store:
        g = store.create_feature_group(customers_group(unique_name("audit"), partitions=3))
        topic = store.registry.topic_of(g.name)
        rng = random.Random(5)
        store.ingest(g.name, [customer(rng.randrange(200), second=rng.randrange(3600)) for _ in range(1500)],
                     progress=False)
        for i in range(10):  # online-only and offline-only records, and deletes
            store.put_record(g.name, customer(1000 + i, second=10), target_stores=["OnlineStore"])
            store.put_record(g.name, customer(2000 + i, second=10), target_stores=["OfflineStore"])
            store.delete_record(g.name, f"c{i}", "2031-01-01T01:00:00Z")
        offline_only = {f"c{2000 + i}" for i in range(10)}

        def online_truth() -> dict:
            return {k: v for k, v in expected_online_state(stack, topic).items() if k not in offline_only}

        procs = [Proc(stack, ["process", "--metrics-port", "0", "--log-level", "warning"], tmp_path / "p.log"),
                 Proc(stack, ["sink", "--metrics-port", "0", "--max-age-s", "1", "--compact-every-s", "0"],
                      tmp_path / "s.log")]
        try:
            expected = online_truth()
            wait_for(lambda: online_state(store, g, list(expected)) == expected, timeout_s=180,
                     what=f"the processor to apply every record\n{procs[0].tail()}")
            # a second batch, so the table has several data files per partition
            store.ingest(g.name, [customer(rng.randrange(200), second=3600 + rng.randrange(3600))
                                  for _ in range(1500)], progress=False)
            want_offline = offline_expected(stack, topic)
            wait_for(lambda: sorted(table_positions(store, g)) == sorted(want_offline), timeout_s=180,
                     what=f"the sink to write every offline record once\n{procs[1].tail()}")
            expected = online_truth()
            wait_for(lambda: online_state(store, g, list(expected)) == expected, timeout_s=180,
                     what=f"the processor to apply the second batch\n{procs[0].tail()}")
        finally:
            for p in procs:
                p.stop()

        # 1. Everything applied and committed: no mismatch, every id and every offline offset checked.
        code, report = run_audit(stack, g.name, "--all")
        grp = report["groups"][0]
        assert code == 0, report
        # every id of the topic, the offline-only ones included (nothing online is right for them)
        n_ids = len(expected) + len(offline_only)
        assert grp["online"]["checked"] == n_ids == grp["online"]["ok"], grp["online"]
        assert grp["offline"]["checked"] == len(want_offline) == grp["offline"]["ok"], grp["offline"]
        assert grp["offline"]["excluded"] == 10 and grp["offline"]["in_flight"] == 0, grp["offline"]

        # 2. Losses behind the workers' backs, and new records nobody has applied yet.
        client = redis.Redis.from_url(stack.redis_url)
        live = sorted(rid for rid, rec in expected.items() if rec is not None)
        dropped = live[:3]
        client.delete(*(online_key(stack.topic_prefix, g.name, rid) for rid in dropped))
        altered = live[3]
        client.hset(online_key(stack.topic_prefix, g.name, altered), "age", "7777")
        lost = delete_one_data_file(store, g)
        assert lost
        fresh_ids = [f"c{5000 + i}" for i in range(20)]
        store.ingest(g.name, [customer(5000 + i) for i in range(20)], progress=False)

        code, report = run_audit(stack, g.name, "--all")
        grp = report["groups"][0]
        assert code == 1, report
        online = grp["online"]
        assert {m["record_id"] for m in online["mismatches"]} == {*dropped, altered}, online["mismatches"]
        for m in online["mismatches"]:
            assert m["on_topic"] == expected[m["record_id"]]
        assert online["in_flight"] == len(fresh_ids), online
        offline = grp["offline"]
        named = {(m["partition"], o) for m in offline["mismatches"] if m["kind"] == "missing"
                 for a, b in m["offsets"] for o in range(a, b + 1)}
        assert named == set(lost), (sorted(named), sorted(lost))
        assert [m["kind"] for m in offline["mismatches"]] == ["missing"] * len(offline["mismatches"])
        assert offline["in_flight"] == len(fresh_ids), offline

        # 3. The text form prints a table per group and exits 1.
        out = subprocess.run([sys.executable, "-m", "featurestream.cli", "audit", g.name, "--sample", "50"],
                             env=stack_env(stack), capture_output=True, text=True, timeout=300)
        assert out.returncode == 1, out.stderr
        assert f"group {g.name}" in out.stdout and "missing offsets" in out.stdout, out.stdout
