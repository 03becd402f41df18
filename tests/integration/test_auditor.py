"""The continuous auditor on the real stack: no false alarms while records flow; a silent online loss (keys
deleted behind the processor's back, the epoch marker kept, as a failover to a replica that missed the last
writes leaves it) is found, counted, logged and healed; a data file removed from the offline table behind
the sink's back is named by its offsets. Ground truth from the topic alone."""

from __future__ import annotations

import random
import re
import threading
import urllib.request
from dataclasses import replace

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families
from pyiceberg.exceptions import CommitFailedException

from featurestream.sdk import FeatureStore
from featurestream.stack.ports import free_port
from schemas.names import online_key
from tests.integration.helpers import customer, customers_group
from tests.integration.procs import Proc
from tests.integration.test_audit import delete_one_data_file, offline_expected, table_positions
from tests.support.online_oracle import expected_online_state, online_state
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration


def metric(port: int, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels`` (0 if none)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return sum(s.value for fam in text_string_to_metric_families(text) for s in fam.samples
               if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def missing_offsets_logged(log: str, group: str) -> set[tuple[int, int]]:
    out = set()
    for p, ranges in re.findall(rf"offline {re.escape(group)}: partition (\d+): missing offsets ([\d, -]+)", log):
        for part in ranges.split(","):
            a, _, b = part.strip().partition("-")
            out.update((int(p), o) for o in range(int(a), int(b or a) + 1))
    return out


def test_the_auditor_finds_counts_and_heals_a_silent_loss_and_names_lost_offline_offsets(stack, tmp_path, unique_name):
    # Its own topic prefix, so its own registry: the auditor audits every group it finds, and on a stack
    # that earlier tests filled (51 groups on one xdist worker) each pass took 23-33 s, not the ~1 s of
    # this test's one group; the deadlines below are for this test's work, not theirs.
    own = replace(stack, topic_prefix=unique_name("auditor"))
    with FeatureStore(own) as store:
        g = store.create_feature_group(customers_group(unique_name("parity"), partitions=3))
        topic = store.registry.topic_of(g.name)
        rng = random.Random(7)

        def batch(n: int, hour: int) -> list[dict]:
            return [customer(rng.randrange(300), second=hour * 3600 + rng.randrange(3600)) for _ in range(n)]

        store.ingest(g.name, batch(2000, 0), progress=False)
        port = free_port()
        procs = [Proc(own, ["process", "--metrics-port", "0", "--log-level", "warning"], tmp_path / "p.log"),
                 Proc(own, ["sink", "--metrics-port", "0", "--max-age-s", "1", "--compact-every-s", "0"],
                      tmp_path / "s.log"),
                 Proc(own, ["auditor", "--interval-s", "2", "--sample", "100", "--rows", "10",
                            "--metrics-port", str(port)], tmp_path / "a.log")]
        auditor = procs[2]
        checked = "featurestream_parity_checked_total"
        mismatches = "featurestream_parity_mismatch_total"
        try:
            # 1. No false alarms while records are published and applied under the auditor's eyes.
            for hour in range(1, 5):
                store.ingest(g.name, batch(500, hour), progress=False)
            expected = expected_online_state(own, topic)
            wait_for(lambda: online_state(store, g, list(expected)) == expected, timeout_s=180,
                     what=f"the processor to apply every record\n{procs[0].tail()}")
            want_offline = offline_expected(own, topic)
            wait_for(lambda: sorted(table_positions(store, g)) == sorted(want_offline), timeout_s=180,
                     what=f"the sink to write every record once\n{procs[1].tail()}")
            seen = metric(auditor.metrics_port(), checked, store="online", group=g.name)
            wait_for(lambda: metric(auditor.metrics_port(), checked, store="online", group=g.name) >= seen + 300, timeout_s=120,
                     what=f"three more audits\n{auditor.tail()}")
            assert metric(auditor.metrics_port(), mismatches, group=g.name) == 0, auditor.tail()  # other tests' groups may differ
            assert metric(auditor.metrics_port(), "featurestream_parity_checked_total", store="offline", group=g.name) > 0

            # 2. A silent online loss: recently applied keys deleted behind the processor's back.
            fresh = [customer(i, second=9 * 3600 + i) for i in range(20)]
            store.ingest(g.name, fresh, progress=False)
            expected = expected_online_state(own, topic)
            wait_for(lambda: online_state(store, g, list(expected)) == expected, timeout_s=120,
                     what=f"the fresh records to be applied\n{procs[0].tail()}")
            client = redis.Redis.from_url(own.redis_url)
            dropped = [f"c{i}" for i in range(0, 20, 2)][:8]
            assert client.delete(*(online_key(own.topic_prefix, g.name, rid) for rid in dropped)) == 8
            wait_for(lambda: metric(auditor.metrics_port(), mismatches, store="online", group=g.name) >= 8, timeout_s=180,
                     what=f"the auditor to find the 8 lost records\n{auditor.tail()}")
            wait_for(lambda: online_state(store, g, list(expected)) == expected, timeout_s=120,
                     what=f"the online store to be healed\n{auditor.tail()}")
            before = metric(auditor.metrics_port(), checked, store="online", group=g.name)
            wait_for(lambda: metric(auditor.metrics_port(), checked, store="online", group=g.name) >= before + 200, timeout_s=60,
                     what="two audits after the repair")
            assert metric(auditor.metrics_port(), mismatches, store="online", group=g.name) == 8, auditor.tail()
            assert metric(auditor.metrics_port(), "featurestream_parity_healed_total", group=g.name) >= 8
            log = auditor.log.read_text(errors="replace")
            for rid in dropped:
                line = next((x for x in log.splitlines() if f"record {rid!r}: value" in x), None)
                assert line is not None, f"no mismatch logged for {rid}\n{auditor.tail()}"
                assert "the store has None" in line and f"'customer_id': {rid!r}" in line, line

            # 3. The offline table loses one data file behind the sink's back.
            def drop_file() -> list[tuple[int, int]] | None:
                try:
                    return delete_one_data_file(store, g)
                except CommitFailedException:
                    return None  # the sink committed meanwhile: again
            lost = wait_for(drop_file, timeout_s=60, what="one data file to be removed")
            wait_for(lambda: metric(auditor.metrics_port(), mismatches, store="offline", group=g.name) >= 1, timeout_s=120,
                     what=f"the auditor to notice the lost rows\n{auditor.tail()}")
            named = missing_offsets_logged(auditor.log.read_text(errors="replace"), g.name)
            assert named == set(lost), (sorted(named), sorted(lost))
            assert auditor.alive(), auditor.tail()
        finally:
            for p in procs:
                p.stop()


def test_ids_lost_while_their_versions_were_in_flight_are_found_and_healed_at_the_next_passes(stack, unique_name):
    """Keys deleted just after the processor applied them, before it committed their offsets: the pass
    then (run from the processor's own apply step, so it surely falls in that window) judges them in
    flight. They must stay among the ids checked first until they get a real verdict, not be left to
    the uniform sample (20 of 3,000 ids a pass here): found and healed within a few passes."""
    from featurestream.cli.audit_cmds import build_auditor
    from sinks.online.epoch import READY, EpochMarker
    from streams.audit_topics import TopicTail
    from streams.auditor import AuditorSettings, OnlineRepair, audit_once
    from streams.group_view import GroupView
    from streams.lag import committed_offsets
    from streams.online.applier import make_online_applier
    from streams.online.engine import online_group_id, run_engine
    from streams.online.healer import OnlineHealer
    from streams.registry import Registry

    with FeatureStore(stack) as store:
        g = store.create_feature_group(customers_group(unique_name("inflight"), partitions=3, offline=False))
        topic = store.registry.topic_of(g.name)
        store.ingest(g.name, [customer(i) for i in range(3000)], progress=False)
        settings = AuditorSettings(interval_s=0.1, sample=20, rows=0)
        auditor = build_auditor(stack, "online")
        applier = make_online_applier(stack.kafka(), stack.redis_url, stack.topic_prefix)
        heal_applier = make_online_applier(stack.kafka(), stack.redis_url, stack.topic_prefix, stage="audit-heal")
        repair = OnlineRepair(auditor, heal_applier, group_above=settings.heal_group_above)
        client = redis.Redis.from_url(stack.redis_url)
        victims = {f"c{i}" for i in range(0, 80, 10)}
        armed = threading.Event()
        window_pass: list = []
        pending = set(victims)

        class ApplyThenLose:
            """The processor's apply step (prepare, then execute), losing the victims just after."""

            def prepare(self, batch):
                return applier.prepare(batch)

            def execute(self, prepared):
                summary = applier.execute(prepared)
                lose(prepared.batch)
                return summary

        def lose(batch) -> None:
            if armed.is_set() and pending:
                # behind the processor's back, before it can commit these offsets (after this returns)
                mine = {r.key.decode() for r in batch if r.topic == topic and r.key} & pending
                if mine:
                    assert client.delete(*(online_key(stack.topic_prefix, g.name, rid) for rid in mine)) == len(mine)
                    pending.difference_update(mine)
                    if not pending:
                        window_pass.extend(audit_once(auditor, settings, repair, 1))

        # The processor in this process, composed as run_processor composes it (the healer keeps the
        # epoch marker, without which nothing is judged), its apply step wrapped.
        registry = Registry(stack.kafka(), prefix=stack.topic_prefix)
        rebuilder = make_online_applier(stack.kafka(), stack.redis_url, stack.topic_prefix, stage="rebuild-online")
        marker = EpochMarker(client, stack.topic_prefix)
        healer = OnlineHealer(marker, GroupView(registry.refresh), stack.kafka(), registry.topic_of, rebuilder,
                              check_every_s=0.5)
        healer.start()
        stop = threading.Event()
        engine = threading.Thread(target=run_engine, args=(stack.kafka(), stack.topic_prefix, ApplyThenLose()),
                                  kwargs={"until": stop.is_set, "install_signal_handlers": False}, daemon=True)
        engine.start()
        try:
            wait_for(lambda: (marker.read() or "").startswith(READY), timeout_s=120, what="the online store to be whole")
            expected = expected_online_state(stack, topic)
            wait_for(lambda: online_state(store, g, list(expected)) == expected, timeout_s=120,
                     what="the processor to apply every record")
            audit_once(auditor, settings, repair, 0)  # the auditor has folded the topic so far
            armed.set()
            store.ingest(g.name, [customer(int(rid[1:]), second=600) for rid in victims], progress=False)
            wait_for(lambda: window_pass, timeout_s=60, what="the pass inside the in-flight window")
            (rep,) = [r for r in window_pass if r.group == g.name]
            assert rep.online.in_flight >= 1 and not rep.online.mismatches, rep.online

            ends = {p: high for p, (_low, high) in TopicTail(stack.kafka(), topic).watermarks().items()}
            wait_for(lambda: all(committed_offsets(stack.kafka(), online_group_id(stack.topic_prefix), [topic])
                                 .get((topic, p), 0) >= end for p, end in ends.items()),
                     timeout_s=30, what="the processor to commit the lost versions' offsets")
            found: set[str] = set()
            for n in range(2, 5):  # three passes at most
                for r in audit_once(auditor, settings, repair, n):
                    if r.group == g.name:
                        found |= {m.record_id for m in r.online.mismatches}
                if found >= victims:
                    break
            assert found == victims, (sorted(found), sorted(victims))
            expected = expected_online_state(stack, topic)
            assert online_state(store, g, sorted(victims)) == {rid: expected[rid] for rid in sorted(victims)}
        finally:
            stop.set()
            engine.join(timeout=30)
            healer.stop()
            auditor.close()
            for a in (applier, heal_applier, rebuilder):
                a.store.close()
                a.deadletters.publisher.close()
