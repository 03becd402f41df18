"""SIGTERM drains and commits within the Helm chart's terminationGracePeriodSeconds (issue 12).

Kubernetes sends SIGTERM, waits terminationGracePeriodSeconds (deploy/helm/featurestream
values.yaml: sink 60 s, processor 30 s), then SIGKILLs. Both workers must be gone, cleanly and
with their offsets committed, well within that.
"""

from __future__ import annotations

import signal
import time
import urllib.request
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from featurestream.config import ENV_STATE_DIR, ENV_TOPIC_PREFIX
from featurestream.sdk import FeatureStore
from featurestream.stack.ports import free_port
from streams.lag import committed_offsets
from tests.integration.helpers import customer, customers_group
from tests.integration.procs import Proc
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration
VALUES = Path(__file__).resolve().parents[2] / "deploy" / "helm" / "featurestream" / "values.yaml"
GRACE = {role: yaml.safe_load(VALUES.read_text())[role]["terminationGracePeriodSeconds"] for role in ("processor", "sink")}
RECORDS = 2_000


def _metric(port: int, name: str) -> float | None:
    """The sum of a metric's samples on a worker's /metrics (None if it does not answer)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
    except OSError:
        return None
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples if s.name == name)


def _sigterm_and_time(proc: Proc, limit_s: float) -> float:
    started = time.monotonic()
    proc.popen.send_signal(signal.SIGTERM)
    code = proc.popen.wait(timeout=limit_s)  # a TimeoutExpired here is the failure: Kubernetes would SIGKILL
    assert code == 0, proc.tail()
    return time.monotonic() - started


@pytest.fixture
def isolated(stack, unique_name, tmp_path):
    """The stack under a topic prefix of its own: the workers' consumer groups see only this test's data."""
    config = replace(stack, topic_prefix=unique_name("grace"))
    with FeatureStore(config) as store:
        yield config, store, {ENV_TOPIC_PREFIX: config.topic_prefix, ENV_STATE_DIR: str(tmp_path / "state")}


def test_sigterm_makes_the_sink_flush_and_commit_its_buffers_within_the_grace_period(isolated, tmp_path,
                                                                                   unique_name):
    config, store, env = isolated
    g = store.create_feature_group(customers_group(unique_name("buffered"), partitions=3))
    assert store.ingest(g.name, [customer(i) for i in range(RECORDS)], progress=False).published == RECORDS
    port = free_port()
    # Files would close only after an hour: every row is still in memory when SIGTERM comes.
    sink = Proc(config, ["sink", "--metrics-port", str(port), "--max-age-s", "3600", "--compact-every-s", "0"],
                tmp_path / "sink.log", extra_env=env)
    try:
        wait_for(lambda: _metric(sink.metrics_port(), "featurestream_offline_uncommitted_records") == RECORDS, timeout_s=90,
                 what=f"the sink holding all {RECORDS} records uncommitted")
        topic = store.registry.topic_of(g.name)
        assert committed_offsets(config.kafka_bootstrap, f"{config.topic_prefix}-offline", [topic]) == {}
        took = _sigterm_and_time(sink, GRACE["sink"])
    finally:
        sink.stop()
    committed = committed_offsets(config.kafka_bootstrap, f"{config.topic_prefix}-offline", [topic])
    assert sum(committed.values()) == RECORDS, committed
    assert store.query(f'SELECT count(*) AS n FROM "{g.name}"').column("n")[0].as_py() == RECORDS
    assert took < GRACE["sink"] / 2, f"the drain took {took:.1f} s of a {GRACE['sink']} s grace period"


def test_sigterm_stops_the_processor_with_its_applied_offsets_committed_within_the_grace_period(
        isolated, tmp_path, unique_name):
    config, store, env = isolated
    g = store.create_feature_group(customers_group(unique_name("applied"), partitions=3))
    assert store.ingest(g.name, [customer(i) for i in range(RECORDS)], progress=False).published == RECORDS
    port = free_port()
    proc = Proc(config, ["process", "--metrics-port", str(port)], tmp_path / "processor.log", extra_env=env)
    try:
        wait_for(lambda: _metric(proc.metrics_port(), "featurestream_online_records_total") == RECORDS, timeout_s=90,
                 what=f"the processor applying all {RECORDS} records")
        took = _sigterm_and_time(proc, GRACE["processor"])
    finally:
        proc.stop()
    topic = store.registry.topic_of(g.name)
    committed = committed_offsets(config.kafka_bootstrap, f"{config.topic_prefix}-online", [topic])
    assert sum(committed.values()) == RECORDS, committed
    assert took < GRACE["processor"] / 2, f"stopping took {took:.1f} s of a {GRACE['processor']} s grace period"
