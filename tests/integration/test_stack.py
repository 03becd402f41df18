"""`featurestream up | status | down` against the real servers it starts.

Runs the real CLI in a subprocess with a throw-away state dir and free ports, with the
endpoint variables removed from its environment so that it really starts all three.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from featurestream.stack import procs
from featurestream.stack.exports import parse_exports
from featurestream.stack.layout import SERVICES
from featurestream.stack.ports import free_port
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration

CLI = [sys.executable, "-m", "featurestream.cli"]
ENDPOINT_VARS = {"FEATURESTREAM_KAFKA_BOOTSTRAP", "FEATURESTREAM_REDIS_URL", "FEATURESTREAM_S3_ENDPOINT_URL",
                 "FEATURESTREAM_OFFLINE_URI", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                 "FEATURESTREAM_STATE_DIR", "FEATURESTREAM_CATALOG_URI"}


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ENDPOINT_VARS}
    env.update(extra)
    return env


def run_cli(*args: object, env: dict[str, str] | None = None, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *map(str, args)], env=env if env is not None else clean_env(),
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def distinct_ports(n: int) -> list[int]:
    ports: set[int] = set()
    while len(ports) < n:
        ports.add(free_port())
    return sorted(ports)


def port_args(ports: list[int]) -> list[object]:
    return ["--kafka-port", ports[0], "--controller-port", ports[1], "--redis-port", ports[2], "--s3-port", ports[3]]



def processes_mentioning(text: str) -> list[int]:
    """Live (non-zombie) processes whose command line mentions ``text`` (the state dir)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            cmd = procs.cmdline(int(entry.name)) or []
            if any(text in part for part in cmd) and procs.start_ticks(int(entry.name)) is not None:
                found.append(int(entry.name))
    return found


@dataclass
class Launched:
    state_dir: Path
    ports: list[int]
    stdout: str
    stderr: str
    seconds: float

    @property
    def exports(self) -> dict[str, str]:
        return parse_exports(self.stdout)

    def pids(self) -> dict[str, int]:
        files = procs.PidFiles(self.state_dir / "run")
        return {s: r.pid for s in SERVICES if (r := files.read(s)) is not None}


@pytest.fixture(scope="module")
def launched(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Launched]:
    state_dir = tmp_path_factory.mktemp("stack-under-test")
    ports = distinct_ports(4)
    started = time.monotonic()
    result = run_cli("up", "--state-dir", state_dir, *port_args(ports))
    seconds = time.monotonic() - started
    try:
        assert result.returncode == 0, f"up failed:\n{result.stderr}"
        yield Launched(state_dir, ports, result.stdout, result.stderr, seconds)
    finally:
        run_cli("down", "--state-dir", state_dir)


def test_up_prints_only_export_lines_and_is_quick_once_cached(launched: Launched) -> None:
    lines = launched.stdout.splitlines()
    assert lines and all(re.match(r"^export [A-Z][A-Z0-9_]*=\S*$", line) for line in lines), launched.stdout
    kafka, _, redis, s3 = launched.ports
    assert launched.exports == {
        "FEATURESTREAM_KAFKA_BOOTSTRAP": f"127.0.0.1:{kafka}",
        "FEATURESTREAM_REDIS_URL": f"redis://127.0.0.1:{redis}/0",
        "FEATURESTREAM_S3_ENDPOINT_URL": f"http://127.0.0.1:{s3}",
        "AWS_ACCESS_KEY_ID": launched.exports["AWS_ACCESS_KEY_ID"],
        "AWS_SECRET_ACCESS_KEY": launched.exports["AWS_SECRET_ACCESS_KEY"],
        "FEATURESTREAM_OFFLINE_URI": "s3://featurestream/offline",
        # the embedded Iceberg catalog: a SQLite file in the state dir
        "FEATURESTREAM_CATALOG_URI": f"sqlite:///{Path(launched.state_dir).resolve()}/iceberg-catalog.db",
    }
    assert "ready" in launched.stderr  # progress goes to stderr, never stdout
    assert launched.seconds < 60, f"up took {launched.seconds:.1f} s with a warm cache"


def test_status_shows_all_three_answering(launched: Launched) -> None:
    result = run_cli("status", "--state-dir", launched.state_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    rows = {line.split()[0]: line for line in result.stdout.splitlines()}
    pids = launched.pids()
    for service in SERVICES:
        assert "running" in rows[service] and rows[service].endswith(("answers", "(versitygw)", "(minio)", "(moto)"))
        assert "does not answer" not in rows[service]
        assert f"pid {pids[service]}" in rows[service]


def test_kafka_round_trip(launched: Launched, unique_name) -> None:
    from confluent_kafka import Consumer, Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    bootstrap = launched.exports["FEATURESTREAM_KAFKA_BOOTSTRAP"]
    topic = unique_name("stack-test")
    admin = AdminClient({"bootstrap.servers": bootstrap})  # keep a reference: futures die with it
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(timeout=30)
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True})
    producer.produce(topic, key=b"k1", value=b"hello")
    assert producer.flush(30) == 0
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": unique_name("g"),
                         "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    try:
        deadline = time.monotonic() + 30
        message = None
        while message is None and time.monotonic() < deadline:
            polled = consumer.poll(0.5)
            if polled is not None:
                assert polled.error() is None, polled.error()
                message = polled
        assert message is not None, "no message within 30 s"
        assert (message.key(), message.value()) == (b"k1", b"hello")
    finally:
        consumer.close()


def test_kafka_does_not_auto_create_topics(launched: Launched, unique_name) -> None:
    from confluent_kafka import KafkaError, KafkaException, Producer

    producer = Producer({"bootstrap.servers": launched.exports["FEATURESTREAM_KAFKA_BOOTSTRAP"],
                         "message.timeout.ms": 3000})
    errors: list[KafkaError] = []
    producer.produce(unique_name("never-created"), value=b"x", on_delivery=lambda err, _msg: errors.append(err))
    producer.flush(10)
    assert errors and errors[0] is not None, "a message to a missing topic must fail (auto-create is off)"
    assert isinstance(errors[0], KafkaError) and not isinstance(errors[0], KafkaException)


def test_redis_set_get(launched: Launched) -> None:
    import redis

    client = redis.Redis.from_url(launched.exports["FEATURESTREAM_REDIS_URL"])
    try:
        client.set("featurestream:stack-test", b"\x00value\xff")
        assert client.get("featurestream:stack-test") == b"\x00value\xff"
    finally:
        client.close()


def test_s3_objects_through_s3fs(launched: Launched) -> None:
    import s3fs

    ex = launched.exports
    fs = s3fs.S3FileSystem(key=ex["AWS_ACCESS_KEY_ID"], secret=ex["AWS_SECRET_ACCESS_KEY"],
                           client_kwargs={"endpoint_url": ex["FEATURESTREAM_S3_ENDPOINT_URL"]},
                           skip_instance_cache=True)
    assert "featurestream" in fs.ls("", refresh=True)
    small = "featurestream/offline/stack-test/small.txt"
    fs.pipe(small, b"hello")
    assert fs.cat(small) == b"hello"
    big = "featurestream/offline/stack-test/big.bin"
    payload = os.urandom(12 * 1024 * 1024)  # > 5 MiB: s3fs uploads it in several parts
    with fs.open(big, "wb", block_size=5 * 1024 * 1024) as fh:
        fh.write(payload)
    assert fs.cat(big) == payload
    assert sorted(fs.ls("featurestream/offline/stack-test", refresh=True)) == [big, small]
    fs.rm([small, big])
    fs.invalidate_cache()
    assert not fs.exists(small)


def test_up_again_is_a_noop_with_the_same_exports(launched: Launched) -> None:
    before = launched.pids()
    result = run_cli("up", "--state-dir", launched.state_dir, *port_args(launched.ports))
    assert result.returncode == 0, result.stderr
    assert result.stdout == launched.stdout
    assert launched.pids() == before
    assert "already running" in result.stderr


def test_an_endpoint_from_the_environment_is_echoed_not_started(launched: Launched) -> None:
    external = "redis://127.0.0.1:1/0"
    result = run_cli("up", "--state-dir", launched.state_dir, *port_args(launched.ports),
                     env=clean_env(FEATURESTREAM_REDIS_URL=external))
    assert result.returncode == 0, result.stderr
    assert parse_exports(result.stdout)["FEATURESTREAM_REDIS_URL"] == external
    assert "from the environment" in result.stderr


def test_z_down_leaves_no_process(launched: Launched) -> None:
    # Named test_z_ so it runs last in this module (pytest keeps file order anyway).
    pids = launched.pids()
    assert set(pids) == set(SERVICES)
    result = run_cli("down", "--state-dir", launched.state_dir)
    assert result.returncode == 0, result.stderr
    wait_for(lambda: all(procs.start_ticks(pid) is None for pid in pids.values()), timeout_s=30,
             interval_s=0.1, what="servers to exit")
    assert not list((launched.state_dir / "run").glob("*.json"))
    assert processes_mentioning(str(launched.state_dir)) == []
    status = run_cli("status", "--state-dir", launched.state_dir)
    assert all("stopped" in line for line in status.stdout.splitlines()), status.stdout


def test_a_taken_port_gives_a_clear_error_and_starts_nothing(tmp_path: Path) -> None:
    ports = distinct_ports(4)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", ports[2]))
        squatter.listen()
        result = run_cli("up", "--state-dir", tmp_path, *port_args(ports))
    assert result.returncode == 1
    assert result.stdout == ""
    assert f"port 127.0.0.1:{ports[2]} is already in use by pid {os.getpid()}" in result.stderr
    assert "--redis-port" in result.stderr and "Traceback" not in result.stderr
    assert not list(tmp_path.glob("run/*.json")) and processes_mentioning(str(tmp_path)) == []


def test_missing_java_gives_a_clear_error(tmp_path: Path) -> None:
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()
    state = tmp_path / "state"
    result = run_cli("up", "--state-dir", state, *port_args(distinct_ports(4)), env=clean_env(PATH=str(empty_bin)))
    assert result.returncode == 1
    assert result.stdout == ""
    assert "`java` was not found on PATH" in result.stderr and "Traceback" not in result.stderr
    assert not list(state.glob("run/*.json")) and processes_mentioning(str(state)) == []


def test_a_server_dying_at_start_gives_its_log_tail_and_stops_the_rest(tmp_path: Path) -> None:
    # A Kafka data dir with garbage metadata: the broker starts, reads it, and exits.
    log_dir = tmp_path / "data" / "kafka" / "log"
    log_dir.mkdir(parents=True)
    (log_dir / "meta.properties").write_text("version=1\nnode.id=77\ncluster.id=not-a-cluster\n")
    result = run_cli("up", "--state-dir", tmp_path, *port_args(distinct_ports(4)))
    assert result.returncode == 1, result.stderr
    assert result.stdout == ""
    assert "kafka: the server exited during start-up" in result.stderr
    assert f"Last lines of {tmp_path / 'logs' / 'kafka.log'}" in result.stderr
    assert "Traceback" not in result.stderr
    wait_for(lambda: processes_mentioning(str(tmp_path)) == [], timeout_s=30, interval_s=0.1,
             what="the other servers to be stopped")
    assert not list(tmp_path.glob("run/*.json"))


def test_the_stack_fixture_gives_answering_endpoints_and_a_session_prefix(stack, topic_prefix: str) -> None:
    from featurestream.stack.kafka import kafka_answers
    from featurestream.stack.redis_server import redis_answers
    from featurestream.stack.s3_server import bucket_of, s3_filesystem

    assert stack.topic_prefix == topic_prefix and topic_prefix.startswith("fstest-")
    assert kafka_answers(stack.require("kafka_bootstrap"))
    assert redis_answers(stack.require("redis_url"))
    fs = s3_filesystem(stack.require("s3_endpoint_url"), stack.aws_access_key_id, stack.aws_secret_access_key)
    assert bucket_of(stack.require("offline_uri")) in fs.ls("", refresh=True)
