"""`featurestream up --kafka-security sasl_ssl` (issue 20 item 5): the secure local broker the tests use, for
users to try. Its exports alone configure clients that create a group and publish over SASL_SSL; a plaintext
client, or a wrong password, is refused on that port; `status` sees it answer; asking for plaintext while it
runs is refused, naming what to do. Redis and S3 come from the test stack (external), so only Kafka starts."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from featurestream.config import KAFKA_SECURITY_ENV, Config
from featurestream.sdk import FeatureStore
from featurestream.stack.exports import parse_exports
from featurestream.stack.kafka import kafka_answers
from featurestream.stack.ports import free_port
from streams.kafka_client import PLAINTEXT, KafkaConnection
from tests.integration.helpers import customer, customers_group, read_topic

pytestmark = pytest.mark.integration
CLI = [sys.executable, "-m", "featurestream.cli"]


def _env(stack: Config) -> dict[str, str]:
    """This process's environment with the test stack's Redis and S3, and no Kafka: `up` starts that one."""
    kafka_vars = {"FEATURESTREAM_KAFKA_BOOTSTRAP", *KAFKA_SECURITY_ENV.values()}
    env = {k: v for k, v in os.environ.items() if k not in kafka_vars}
    env.update({k: v for k, v in stack.to_env().items() if k not in kafka_vars})
    return env


def test_up_with_sasl_ssl_starts_a_broker_that_its_exports_reach_and_plaintext_does_not(stack, tmp_path: Path,
                                                                                       unique_name):
    state = tmp_path / "state"
    ports: set[int] = set()
    while len(ports) < 3:
        ports.add(free_port())
    kafka_port, controller_port, sasl_port = sorted(ports)
    env = _env(stack)
    base = [*CLI, "up", "--state-dir", str(state), "--kafka-port", str(kafka_port),
            "--controller-port", str(controller_port), "--kafka-sasl-port", str(sasl_port)]
    try:
        result = subprocess.run([*base, "--kafka-security", "sasl_ssl"], env=env, capture_output=True, text=True,
                                timeout=300, stdin=subprocess.DEVNULL)
        assert result.returncode == 0, result.stderr
        exports = parse_exports(result.stdout)
        assert exports["FEATURESTREAM_KAFKA_BOOTSTRAP"] == f"127.0.0.1:{sasl_port}"
        assert exports["FEATURESTREAM_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
        assert exports["FEATURESTREAM_KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512"
        assert exports["FEATURESTREAM_KAFKA_SASL_USERNAME"] == "featurestream"
        assert Path(exports["FEATURESTREAM_KAFKA_SSL_CA_LOCATION"]).is_file()
        password = exports["FEATURESTREAM_KAFKA_SASL_PASSWORD"]
        assert password and password not in result.stderr  # printed for eval only, never in the log lines

        cfg = replace(Config.from_env({**env, **exports}), topic_prefix=f"{stack.topic_prefix}-sasl")
        assert cfg.kafka().security.protocol == "SASL_SSL"
        with FeatureStore(cfg) as fs:
            g = fs.create_feature_group(customers_group(unique_name("sasl"), partitions=1))
            fs.ingest(g.name, [customer(i) for i in range(20)], progress=False)
            topic = fs.registry.topic_of(g.name)
        # what went over SASL_SSL is on the broker, read back through its plaintext inter-broker listener
        on_topic = read_topic(replace(cfg, kafka_bootstrap=f"127.0.0.1:{kafka_port}", kafka_security=PLAINTEXT),
                              topic)
        assert len(on_topic) == 20

        bootstrap = exports["FEATURESTREAM_KAFKA_BOOTSTRAP"]
        assert not kafka_answers(KafkaConnection(bootstrap, PLAINTEXT), timeout=3)
        wrong = replace(cfg.kafka().security, sasl_password=password + "x")
        assert not kafka_answers(KafkaConnection(bootstrap, wrong), timeout=5)

        status = subprocess.run([*CLI, "status", "--state-dir", str(state)], env={**env, **exports},
                                capture_output=True, text=True, timeout=120)
        kafka_line = next(ln for ln in status.stdout.splitlines() if ln.startswith("kafka"))
        assert "running" in kafka_line and f"127.0.0.1:{sasl_port}" in kafka_line and "answers" in kafka_line, (
            status.stdout + status.stderr)

        again = subprocess.run([*base, "--kafka-security", "plaintext"], env=env, capture_output=True, text=True,
                               timeout=120, stdin=subprocess.DEVNULL)
        assert again.returncode != 0 and "already running" in again.stderr and "featurestream down" in again.stderr, (
            again.stderr)
        reuse = subprocess.run(base, env=env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
        assert reuse.returncode == 0 and parse_exports(reuse.stdout) == exports, reuse.stderr  # as it runs
    finally:
        subprocess.run([*CLI, "down", "--state-dir", str(state)], env=env, capture_output=True, timeout=120)
