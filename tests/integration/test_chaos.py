"""Chaos: kill -9 Kafka, Redis and the S3 server in turn while a processor, a sink and a
300,000-row ingest run; restart each with `featurestream up`. Then check, against ground truth
computed from the topic and the input file alone, that nothing was lost or duplicated and
that every value is exact.

Runs on a stack of its own (`featurestream up` in a throw-away state dir on free ports), so the
faults disturb no other test.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import orjson
import pytest

from featurestream.config import Config
from featurestream.sdk import FeatureStore
from featurestream.stack import procs
from featurestream.stack.exports import parse_exports
from featurestream.stack.ports import free_port
from schemas.group import FeatureGroup
from schemas.types import FeatureDefinition, ScalarType
from tests.integration.auditor_watch import AuditorWatch
from tests.integration.procs import Proc, worker_ready
from tests.support.online_oracle import expected_online_state, online_state, topic_records
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration

CLI = [sys.executable, "-m", "featurestream.cli"]
ROWS = 300_000
IDS = 20_000
ENDPOINT_VARS = {"FEATURESTREAM_KAFKA_BOOTSTRAP", "FEATURESTREAM_REDIS_URL", "FEATURESTREAM_S3_ENDPOINT_URL",
                 "FEATURESTREAM_OFFLINE_URI", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                 "FEATURESTREAM_STATE_DIR"}


@dataclass
class ChaosStack:
    state_dir: Path
    ports: list[int]
    config: Config
    log: list[str]

    def up(self) -> float:
        """`featurestream up` (starts whatever is not running); returns the seconds it took."""
        env = {k: v for k, v in os.environ.items() if k not in ENDPOINT_VARS}
        started = time.monotonic()
        result = subprocess.run([*CLI, "up", "--state-dir", str(self.state_dir), "--kafka-port", str(self.ports[0]),
                                 "--controller-port", str(self.ports[1]), "--redis-port", str(self.ports[2]),
                                 "--s3-port", str(self.ports[3])], env=env, capture_output=True, text=True,
                                timeout=300, stdin=subprocess.DEVNULL)
        assert result.returncode == 0, f"featurestream up failed:\n{result.stderr}"
        self.exports = parse_exports(result.stdout)
        return time.monotonic() - started

    def kill(self, service: str) -> None:
        record = procs.PidFiles(self.state_dir / "run").read(service)
        assert record is not None, f"no pid file for {service}"
        os.kill(record.pid, signal.SIGKILL)
        wait_for(lambda: procs.start_ticks(record.pid) is None, timeout_s=30, what=f"{service} to die")

    def down(self) -> None:
        env = {k: v for k, v in os.environ.items() if k not in ENDPOINT_VARS}
        subprocess.run([*CLI, "down", "--state-dir", str(self.state_dir)], env=env, capture_output=True,
                       timeout=120, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def chaos_stack(tmp_path_factory: pytest.TempPathFactory, topic_prefix: str) -> Iterator[ChaosStack]:
    state_dir = tmp_path_factory.mktemp("chaos-stack")
    ports: set[int] = set()
    while len(ports) < 4:
        ports.add(free_port())
    stack = ChaosStack(state_dir, sorted(ports), Config(), [])
    try:
        stack.up()
        base = Config.from_env(stack.exports)
        stack.config = replace(base, state_dir=state_dir, topic_prefix=f"{topic_prefix}-chaos")
        yield stack
    finally:
        stack.down()


def group(name: str) -> FeatureGroup:
    feats = (FeatureDefinition("id", ScalarType.STRING), FeatureDefinition("event_time", ScalarType.STRING),
             FeatureDefinition("n", ScalarType.INTEGRAL), FeatureDefinition("x", ScalarType.FRACTIONAL),
             FeatureDefinition("s", ScalarType.STRING))
    return FeatureGroup(name=name, record_identifier_name="id", event_time_name="event_time", features=feats,
                        partitions=3)


def write_input(path: Path) -> list[dict]:
    rng = random.Random(2026)
    rows = []
    for i in range(ROWS):
        rows.append({"id": f"u{rng.randrange(IDS)}",
                     "event_time": f"2031-01-{1 + rng.randrange(28):02d}T{rng.randrange(24):02d}:"
                                   f"{rng.randrange(60):02d}:{rng.randrange(60):02d}.{rng.randrange(10**6):06d}Z",
                     "n": rng.choice([i, -(2**63), 2**63 - 1, 2**53 + 1]),
                     "x": rng.choice([i / 7, 5.81, 1e-310, -0.0, 1.7976931348623157e308]),
                     "s": rng.choice([f"v{i}", "007", 'a "quote", comma', "tab\there", "🙂"])})
    path.write_bytes(b"\n".join(orjson.dumps(r) for r in rows) + b"\n")
    return rows


def _row_key(r: dict) -> tuple:
    return (r["id"], r["event_time"], r["n"], repr(r["x"]), r["s"])


@pytest.mark.timeout(1800)  # 300k rows through a processor and a sink on 2 cores, three faults: minutes
def test_kafka_redis_and_s3_killed_mid_stream_lose_and_duplicate_nothing(chaos_stack: ChaosStack, tmp_path,
                                                                          unique_name):
    cfg = chaos_stack.config
    with FeatureStore(cfg) as store:
        g = store.create_feature_group(group(unique_name("chaos")))
        topic = store.registry.topic_of(g.name)
        data = tmp_path / "input.jsonl"
        rows = write_input(data)
        ports = [free_port(), free_port()]
        workers = [Proc(cfg, ["process", "--metrics-port", str(ports[0]), "--log-level", "warning"], tmp_path / "p.log"),
                   Proc(cfg, ["sink", "--metrics-port", str(ports[1]), "--max-age-s", "2"], tmp_path / "sink.log")]
        # The faults must hit a running pipeline: a worker still starting when Kafka goes away fails
        # its first contact within seconds, by design (a wrong address must be reported fast).
        for w in workers:
            wait_for(lambda w=w: worker_ready(w.metrics_port()), timeout_s=120, interval_s=0.5,
                     what=f"worker on metrics port {w.metrics_port()} to be ready\n{w.tail()}")
        # Issue 20's "no false alarms": the continuous auditor watches the whole run, faults included.
        auditor = AuditorWatch(cfg, tmp_path / "auditor.log", interval_s=5)
        rejects = tmp_path / "rejects.jsonl"
        env = {**os.environ, **cfg.to_env()}
        t0 = time.monotonic()
        ingest = subprocess.Popen([*CLI, "ingest", g.name, str(data), "--rejects", str(rejects), "--no-progress"],
                                  env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        faults = []
        try:
            # Let the ingest get going, then take each server away in turn, mid-stream.
            wait_for(lambda: _topic_size(cfg, topic) > 20_000 or ingest.poll() is not None, timeout_s=120,
                     interval_s=0.2, what="the ingest to publish 20,000 rows")
            assert ingest.poll() is None, "the ingest ended before the faults: make the input larger"

            for service in ("kafka", "redis", "s3"):
                started = time.monotonic()
                chaos_stack.kill(service)
                time.sleep(2)  # the outage itself: the fault under test, not a wait for a condition
                up_s = chaos_stack.up()
                faults.append((service, round(time.monotonic() - started, 1), round(up_s, 1)))
            out, err = ingest.communicate(timeout=900)
            assert ingest.returncode == 0, f"ingest failed across the outages:\n{err[-3000:]}"
            print(f"\nchaos: ingest done {time.monotonic() - t0:.0f} s after it started", flush=True)
            # 1. The topic holds every row of the file exactly once.
            records = topic_records(cfg, topic)
            on_topic = Counter(_row_key({"id": v["id"], **v["record"]}) for _, _, v in records)
            assert sum(on_topic.values()) == ROWS
            assert on_topic == Counter(_row_key(r) for r in rows)
            # 2. Online: every id equals the latest record per id computed from the topic.
            expected = expected_online_state(cfg, topic)
            assert len(expected) == len({r["id"] for r in rows})

            ids = sorted(expected)
            wait_for(lambda: online_state(store, g, ids) == expected, timeout_s=600, interval_s=2,
                     what=f"the online store to equal the topic's latest per id\n{workers[0].tail()}")
            print(f"chaos: online store equal to the topic {time.monotonic() - t0:.0f} s after the start", flush=True)
            # 3. Offline: every topic record exactly once, with exact values.
            wanted = {(p, o): v for p, o, v in records}

            def offline_rows() -> list[dict]:
                return store.query(f'SELECT _kafka_partition AS p, _kafka_offset AS o, id, n, x, s '
                                   f'FROM "{g.name}"').to_pylist()

            count = f'SELECT count(*) AS n FROM "{g.name}"'
            wait_for(lambda: store.query(count).column("n")[0].as_py() >= ROWS, timeout_s=600, interval_s=5,
                     what=f"the sink to write every row\n{workers[1].tail()}")
            print(f"chaos: offline store complete {time.monotonic() - t0:.0f} s after the start", flush=True)
            got = offline_rows()
            coords = Counter((r["p"], r["o"]) for r in got)
            assert [c for c, n in coords.items() if n > 1] == []
            assert set(coords) == set(wanted)
            for r in got:
                v = wanted[(r["p"], r["o"])]["record"]
                assert (r["id"], r["n"], repr(r["x"]), r["s"]) == (v["id"], v["n"], repr(v["x"]), v["s"])
            assert all(w.alive() for w in workers), [w.tail() for w in workers]
            # 4. The auditor, which ran through the faults, found no real mismatch, and counted what
            # it saw in flight apart.
            parity = auditor.final(g.name)
            print(f"chaos: auditor: {parity.line()}", flush=True)
            assert auditor.proc.alive(), auditor.proc.tail()
            assert parity.mismatches == {"online": 0, "offline": 0}, f"{parity.line()}\n{auditor.proc.tail()}"
            assert parity.checked["online"] > 0 and parity.checked["offline"] > 0, parity.line()
            assert parity.in_flight["online"] + parity.in_flight["offline"] > 0, parity.line()
        finally:
            if ingest.poll() is None:
                ingest.kill()
            auditor.stop()
            for w in workers:
                w.stop()
        print(f"\nchaos faults (service, seconds down incl. restart, seconds in `up`): {faults}")


def _topic_size(cfg: Config, topic: str) -> int:
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": cfg.kafka_bootstrap, "group.id": "chaos-size", "log_level": 0})
    try:
        md = c.list_topics(topic=topic, timeout=5).topics.get(topic)
        if md is None or not md.partitions:
            return 0
        return sum(c.get_watermark_offsets(TopicPartition(topic, p), timeout=5)[1] for p in md.partitions)
    except Exception:  # noqa: BLE001 - the broker may be away mid-fault: not there yet
        return 0
    finally:
        c.close()
