"""Broker outages while publishing: the local Kafka killed with -9 mid-ingest and restarted the way
`featurestream up` restarts it (issue 10).

These tests run their own single-node Kafka (the local stack's code, on free ports, in a
throw-away state dir), so killing it disturbs no other test. Nothing is mocked: the ingest is the
real CLI in a subprocess, and the topic is read back independently with plain confluent-kafka.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import orjson
import pandas as pd
import pytest

from featurestream.config import Config
from featurestream.sdk import FeatureStore
from featurestream.stack import procs
from featurestream.stack.launcher import up
from featurestream.stack.layout import StackLayout, StackPorts
from featurestream.stack.ports import answers, free_port, port_is_free
from schemas.errors import ServiceUnavailableError
from tests.integration.helpers import customer, customers_group, read_topic
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration

ROWS = 200_000


@dataclass
class OwnKafka:
    """A Kafka broker this module may kill: its Config, and how to kill and restart it."""

    config: Config
    launch: Config  # what `up` is called with (Redis and S3 named, so only Kafka starts)
    ports: StackPorts
    layout: StackLayout

    def pid(self) -> int:
        record = procs.PidFiles(self.layout.run_dir).read("kafka")
        assert record is not None and procs.is_running(record), "the module's Kafka is not running"
        return record.pid

    def kill(self) -> None:
        """kill -9, and wait until the process is gone."""
        pid = self.pid()
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: procs.start_ticks(pid) is None, timeout_s=30, interval_s=0.05, what="Kafka to die")

    def restart(self) -> None:
        """What `featurestream up` does when its Kafka died: start it again on the same data (blocks
        until it answers). Called right after ``kill``: `up` itself waits for the dead broker's ports."""
        up(self.launch, ports=self.ports, layout=self.layout)


def _ports_below_the_ephemeral_range(count: int) -> list[int]:
    """Free ports the kernel never hands out as a client's source port.

    A precaution: while the broker is down its clients reconnect about once a second, and a connect to
    a loopback port inside the ephemeral range can be given that very port as its source port and
    connect to itself (TCP simultaneous open), holding the port the restarted broker needs. Real
    brokers listen on 9092, below the range. (The "port ... is already in use" failures seen while
    writing these tests happened below the range too: `up` restarted the broker while the dead JVM
    still held its ports. `up` now waits for them, featurestream.stack.launcher.RELEASE_WAIT_S.)
    """
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    chosen: list[int] = []
    for port in random.sample(range(max(1024, low - 12_000), low), 2_000):
        if port_is_free(port) and not answers(port):
            chosen.append(port)
            if len(chosen) == count:
                return chosen
    raise AssertionError(f"no {count} free ports below the ephemeral range (from {low})")


@pytest.fixture(scope="module")
def kafka(tmp_path_factory: pytest.TempPathFactory, topic_prefix: str) -> Iterator[OwnKafka]:
    state = tmp_path_factory.mktemp("outage-kafka")
    kafka_port, controller, redis_port, s3_port = _ports_below_the_ephemeral_range(4)
    stack_ports = StackPorts(kafka=kafka_port, controller=controller, redis=redis_port, s3=s3_port)
    # Redis and S3 "from the environment" (never contacted here): `up` starts only Kafka.
    launch = Config(redis_url=f"redis://127.0.0.1:{redis_port}/0", s3_endpoint_url=f"http://127.0.0.1:{s3_port}",
                    state_dir=state)
    layout = StackLayout(state)
    endpoints = up(launch, ports=stack_ports, layout=layout)
    own = OwnKafka(Config(kafka_bootstrap=endpoints.kafka_bootstrap, topic_prefix=topic_prefix, state_dir=state),
                   launch, stack_ports, layout)
    try:
        yield own
    finally:
        record = procs.PidFiles(layout.run_dir).read("kafka")
        if record is not None:
            procs.stop(record)


def _data_file(tmp_path: Path, rows: int) -> Path:
    path = tmp_path / "customers.parquet"
    pd.DataFrame([customer(i) for i in range(rows)]).to_parquet(path)
    return path


_started: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def _no_leftover_processes() -> Iterator[None]:
    """A failed test leaves no ingest or server of its own running."""
    yield
    while _started:
        proc = _started.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)


def _ingest(config: Config, group: str, path: Path, log: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, **config.to_env()}
    proc = subprocess.Popen([sys.executable, "-m", "featurestream.cli", "ingest", group, str(path), "--no-progress",
                             *extra], env=env, stdout=subprocess.DEVNULL, stderr=log.open("wb"),
                            start_new_session=True)
    _started.append(proc)
    return proc


def _end_offsets(config: Config, topic: str) -> int:
    """Records on ``topic`` (sum of its partitions' end offsets); -1 while the broker does not answer."""
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    c = Consumer({"bootstrap.servers": config.kafka_bootstrap, "group.id": "t-outage-watch", "log_level": 0})
    try:
        md = c.list_topics(topic=topic, timeout=5)
        return sum(c.get_watermark_offsets(TopicPartition(topic, p), timeout=5)[1] for p in md.topics[topic].partitions)
    except KafkaException:
        return -1
    finally:
        c.close()


def _serve(config: Config, tmp_path: Path, *extra: str) -> tuple[subprocess.Popen, str]:
    """`featurestream serve` on this module's Kafka (PutRecord and BatchWriteRecord need no Redis)."""
    port = free_port()
    env = {**os.environ, **config.to_env(), "FEATURESTREAM_REDIS_URL": "redis://127.0.0.1:1/0"}
    log = tmp_path / "serve.log"
    proc = subprocess.Popen([sys.executable, "-m", "featurestream.cli", "serve", "--no-auth", "--workers", "1",
                             "--port", str(port), *extra], env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    _started.append(proc)
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        assert proc.poll() is None, f"serve exited: {log.read_text()}"
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as resp:
                return resp.status == 200
        except OSError:
            return False

    wait_for(healthy, timeout_s=60, what=f"featurestream serve on {url}")
    return proc, url


def _http(url: str, method: str, path: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(url + path, data=orjson.dumps(body), method=method,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=300) as resp:
            return resp.status, orjson.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, orjson.loads(exc.read() or b"{}")


def _wire_record(i: int) -> list[dict]:
    return [{"FeatureName": "customer_id", "ValueAsString": f"c{i}"},
            {"FeatureName": "event_time", "ValueAsString": "2031-01-01T00:00:00Z"}]


def _timed(call):  # noqa: ANN001, ANN202 - a test helper
    """(seconds, what ``call`` returned or raised)."""
    started = time.monotonic()
    try:
        out = call()
    except Exception as exc:  # noqa: BLE001 - the caller asserts on it
        out = exc
    return time.monotonic() - started, out


def _keys_on_topic(config: Config, topic: str) -> Counter[bytes]:
    return Counter(m.key() for m in read_topic(config, topic, timeout_s=180))


def _kill_mid_ingest(kafka: OwnKafka, topic: str, proc: subprocess.Popen, at_least: int) -> int:
    """Wait until ``at_least`` records are on the topic, then kill -9 Kafka; the records on it then."""
    def progress() -> int | str:
        if proc.poll() is not None:
            return "ended"
        n = _end_offsets(kafka.config, topic)
        return n if n >= at_least else 0

    landed = wait_for(progress, timeout_s=300, interval_s=0.05, what=f"{at_least} records on {topic}")
    assert landed != "ended", "the ingest ended before Kafka could be killed mid-way"
    kafka.kill()
    assert proc.poll() is None, "the ingest must still be running when Kafka dies"
    assert landed < ROWS, "Kafka must die before every row is on the topic"
    return int(landed)


def test_an_outage_shorter_than_the_delivery_timeout_loses_and_duplicates_nothing(kafka, unique_name, tmp_path):
    with FeatureStore(kafka.config) as fs:
        group = fs.create_feature_group(customers_group(unique_name("outage-a"), offline=False))
        topic = fs.registry.topic_of(group.name)
        path = _data_file(tmp_path, ROWS)
        server, url = _serve(kafka.config, tmp_path)
        try:
            assert _http(url, "PUT", f"/FeatureGroup/{group.name}", {"Record": _wire_record(ROWS + 1)})[0] == 200
            log = tmp_path / "ingest.log"
            started = time.monotonic()
            proc = _ingest(replace(kafka.config, delivery_timeout_s=240.0), group.name, path, log)
            landed = _kill_mid_ingest(kafka, topic, proc, ROWS // 5)
            killed_at = time.monotonic()
            # While Kafka is down: an SDK put, a registry read and HTTP PutRecord/BatchWriteRecord, from
            # processes that reached Kafka before, wait for it (answered after the restart) instead of failing.
            outcomes: dict[str, object] = {}

            def during(name: str, call) -> None:  # noqa: ANN001 - a test helper
                try:
                    outcomes[name] = call()
                except Exception as exc:  # noqa: BLE001 - recorded and asserted on below
                    outcomes[name] = exc

            batch = {"Entries": [{"FeatureGroupName": group.name, "Record": _wire_record(i)}
                                 for i in (ROWS + 3, ROWS + 4)]}
            calls = {"put": lambda: fs.put_record(group.name, customer(ROWS)),
                     "describe": lambda: fs.registry.describe(group.name),
                     "http put": lambda: _http(url, "PUT", f"/FeatureGroup/{group.name}",
                                               {"Record": _wire_record(ROWS + 2)}),
                     "http batch": lambda: _http(url, "POST", "/BatchWriteRecord", batch)}
            threads = [threading.Thread(target=during, args=item) for item in calls.items()]
            for t in threads:
                t.start()  # Kafka is dead now, and restarting it takes seconds: every call meets the outage
            kafka.restart()
            back_at = time.monotonic()
            code = proc.wait(timeout=300)
            finished = time.monotonic()
            for t in threads:
                t.join(timeout=300)
        finally:
            server.terminate()
            server.wait(timeout=30)
    stderr = log.read_text()
    assert code == 0, stderr
    assert f"{ROWS} published" in stderr, stderr
    assert isinstance(outcomes["put"], tuple), outcomes["put"]
    assert getattr(outcomes["describe"], "name", None) == group.name, outcomes["describe"]
    assert outcomes["http put"] == (200, {}), outcomes["http put"]
    assert outcomes["http batch"] == (200, {"Errors": [], "UnprocessedEntries": []}), outcomes["http batch"]
    keys = _keys_on_topic(kafka.config, topic)
    assert set(keys) == {f"c{i}".encode() for i in range(ROWS + 5)}
    twice = {k: n for k, n in keys.items() if n > 1}
    assert not twice, f"{len(twice)} rows are on the topic more than once, e.g. {list(twice.items())[:5]}"
    print(f"\noutage (a): killed with {landed} of {ROWS} on the topic; Kafka back after {back_at - killed_at:.1f} s; "
          f"ingest took {finished - started:.1f} s in all, {finished - back_at:.1f} s after the restart")


def test_an_outage_longer_than_the_delivery_timeout_reports_the_unacknowledged_rows(kafka, unique_name, tmp_path):
    short = replace(kafka.config, delivery_timeout_s=6.0)
    with FeatureStore(short) as fs:
        group = fs.create_feature_group(customers_group(unique_name("outage-b"), offline=False))
        topic = fs.registry.topic_of(group.name)
        path = _data_file(tmp_path, ROWS)
        rejects = tmp_path / "rejects.jsonl"
        log = tmp_path / "ingest.log"
        server, url = _serve(kafka.config, tmp_path, "--delivery-timeout", "6")
        try:
            assert _http(url, "PUT", f"/FeatureGroup/{group.name}", {"Record": _wire_record(ROWS + 1)})[0] == 200
            fs.put_record(group.name, customer(ROWS + 2))
            proc = _ingest(short, group.name, path, log, "--rejects", str(rejects))
            _kill_mid_ingest(kafka, topic, proc, ROWS // 5)
            killed_at = time.monotonic()
            # Kafka stays down until the ingest gave up. Meanwhile single puts give up after the delivery
            # timeout too, naming what was not delivered.
            batch = {"Entries": [{"FeatureGroupName": group.name, "Record": _wire_record(i)}
                                 for i in (ROWS + 5, ROWS + 6)]}
            outcomes: dict[str, tuple[float, object]] = {}
            calls = {"put": lambda: fs.put_record(group.name, customer(ROWS + 3)),
                     "http put": lambda: _http(url, "PUT", f"/FeatureGroup/{group.name}",
                                               {"Record": _wire_record(ROWS + 4)}),
                     "http batch": lambda: _http(url, "POST", "/BatchWriteRecord", batch)}
            threads = [threading.Thread(target=lambda n=n, c=c: outcomes.__setitem__(n, _timed(c)))
                       for n, c in calls.items()]
            for t in threads:
                t.start()
            code = proc.wait(timeout=180)
            gave_up_after = time.monotonic() - killed_at
            for t in threads:
                t.join(timeout=120)
        finally:
            server.terminate()
            server.wait(timeout=30)
    stderr = log.read_text()
    assert code == 1, stderr
    seconds, put = outcomes["put"]
    assert isinstance(put, ServiceUnavailableError) and f"c{ROWS + 3}" in str(put) and "not delivered" in str(put), put
    assert 5 < seconds < 60, f"the put failed after {seconds:.1f} s; the delivery timeout is 6 s"
    seconds, (status, body) = outcomes["http put"]
    assert status == 503 and body["__type"] == "ServiceUnavailable" and 5 < seconds < 60, (seconds, status, body)
    seconds, (status, body) = outcomes["http batch"]
    assert status == 200 and body["Errors"] == [] and body["UnprocessedEntries"] == batch["Entries"], body
    lines = [orjson.loads(line) for line in rejects.read_bytes().splitlines()]
    unacked = [line for line in lines if line.get("unacknowledged")]
    assert unacked and len(unacked) == len(lines), "every line is an unacknowledged row (no row was invalid)"
    assert all(line["reason"].startswith(("not acknowledged by Kafka", "not sent")) for line in unacked)
    missing = {line["index"] for line in unacked}
    assert len(missing) == len(unacked)
    assert all(line["row"]["customer_id"] == f"c{line['index']}" for line in unacked)
    published = ROWS - len(missing)
    assert f"{published} published" in stderr and f"{len(missing)} NOT acknowledged" in stderr, stderr

    kafka.restart()
    before = _keys_on_topic(kafka.config, topic)
    # Every acknowledged row is durable; the broker may also hold some it never acknowledged.
    acknowledged = {f"c{i}".encode() for i in range(ROWS) if i not in missing} | {f"c{ROWS + 1}".encode(),
                                                                                  f"c{ROWS + 2}".encode()}
    assert acknowledged <= set(before), f"{len(acknowledged - set(before))} acknowledged rows are not on the topic"
    kept_unacked = len(set(before) - acknowledged)

    log2 = tmp_path / "resume.log"
    again = _ingest(kafka.config, group.name, path, log2, "--resume", str(rejects))
    assert again.wait(timeout=300) == 0, log2.read_text()
    keys = _keys_on_topic(kafka.config, topic)
    # Every row once; the puts that failed during the outage were indeed not delivered.
    assert set(keys) == {f"c{i}".encode() for i in (*range(ROWS), ROWS + 1, ROWS + 2)}
    twice = {k: n for k, n in keys.items() if n > 1}
    assert not twice, f"{len(twice)} rows are on the topic more than once, e.g. {list(twice.items())[:5]}"
    resumed = log2.read_text()
    assert f"{len(missing) - kept_unacked} published" in resumed, resumed
    print(f"\noutage (b): delivery timeout 6 s; the ingest gave up {gave_up_after:.1f} s after the kill with "
          f"{len(missing)} of {ROWS} rows unacknowledged; {kept_unacked} of those were on the topic anyway, and "
          f"the resumed ingest skipped them; a put failed after {outcomes['put'][0]:.1f} s, HTTP PutRecord after "
          f"{outcomes['http put'][0]:.1f} s, BatchWriteRecord after {outcomes['http batch'][0]:.1f} s")


def test_http_puts_in_flight_when_kafka_stops_answering_are_acknowledged_only_if_on_the_topic(kafka, unique_name, tmp_path):
    """PutRecords share the producer's delivery polls (featurestream/http/delivery.py): when Kafka stops
    answering (SIGSTOP: a restart would cost this test 20 s) under many in flight, each is answered 200 only
    if the broker acknowledged it, else ServiceUnavailable after the delivery timeout; none is a 500, none
    hangs, and every 200 is on the topic."""
    with FeatureStore(kafka.config) as fs:
        group = fs.create_feature_group(customers_group(unique_name("outage-c"), offline=False))
        topic = fs.registry.topic_of(group.name)
    server, url = _serve(kafka.config, tmp_path, "--delivery-timeout", "3")
    path = f"/FeatureGroup/{group.name}"
    answers: dict[int, tuple[float, int, dict]] = {}
    numbers = iter(range(10**9))
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            i = next(numbers)
            answers[i] = _timed(lambda i=i: _http(url, "PUT", path, {"Record": _wire_record(i)}))
            if not isinstance(answers[i][1], tuple) or answers[i][1][0] != 200:
                return  # Kafka is away: this client's put in flight at the kill has been answered

    def count(status: int) -> int:
        return sum(1 for _s, answer in list(answers.values()) if isinstance(answer, tuple) and answer[0] == status)

    clients = [threading.Thread(target=client) for _ in range(8)]
    try:
        for t in clients:
            t.start()
        wait_for(lambda: count(200) >= 100, timeout_s=60, interval_s=0.01, what="100 puts acknowledged")
        broker = kafka.pid()
        os.kill(broker, signal.SIGSTOP)  # with puts in flight: some reach the broker, some only the producer
        try:
            for t in clients:
                t.join(timeout=60)  # each client ends at its first answer that is not 200
        finally:
            os.kill(broker, signal.SIGCONT)
        assert not any(t.is_alive() for t in clients), "a put was not answered within 60 s of the stop"
    finally:
        stop.set()
        server.terminate()
        server.wait(timeout=30)
    on_topic = set(_keys_on_topic(kafka.config, topic))
    outcomes = Counter(answer[0] if isinstance(answer, tuple) else type(answer).__name__
                       for _s, answer in answers.values())
    assert set(outcomes) == {200, 503}, outcomes
    for seconds, (status, body) in answers.values():
        assert status == 200 or body["__type"] == "ServiceUnavailable", body
        assert seconds < 3 + 10 + 5, f"a put was answered after {seconds:.1f} s; the delivery timeout is 3 s"
    acknowledged = {f"c{i}".encode() for i, (_s, (status, _b)) in answers.items() if status == 200}
    assert acknowledged <= on_topic, f"{len(acknowledged - on_topic)} puts answered 200 are not on the topic"
    print(f"\noutage (c): {outcomes[200]} puts acknowledged and on the topic, {outcomes[503]} answered 503; "
          f"{len(on_topic) - len(acknowledged)} of those reached the broker anyway")


def test_a_broker_that_never_answered_is_reported_within_seconds(unique_name, tmp_path):
    nobody = f"127.0.0.1:{free_port()}"
    cfg = Config(kafka_bootstrap=nobody, topic_prefix="never")  # default delivery timeout: 120 s
    assert cfg.delivery_timeout_s == 120
    started = time.monotonic()
    with FeatureStore(cfg) as fs, pytest.raises(ServiceUnavailableError, match=nobody) as err:
        fs.put_record("customers", customer(1))
    sdk_seconds = time.monotonic() - started
    assert "has not answered since this process started" in str(err.value)
    assert sdk_seconds < 20, f"the SDK took {sdk_seconds:.1f} s to report a broker that never answered"

    path = tmp_path / "rows.jsonl"
    path.write_bytes(orjson.dumps(customer(1)) + b"\n")
    log = tmp_path / "ingest.log"
    started = time.monotonic()
    code = _ingest(cfg, "customers", path, log).wait(timeout=120)
    cli_seconds = time.monotonic() - started
    stderr = log.read_text()
    assert code == 1 and nobody in stderr and "Traceback" not in stderr, stderr
    assert cli_seconds < 30, f"the CLI took {cli_seconds:.1f} s to report a broker that never answered"
    print(f"\nnever-reachable broker: SDK error after {sdk_seconds:.1f} s, CLI exit after {cli_seconds:.1f} s")


def test_resuming_skips_the_rows_an_interrupted_ingest_left_on_the_topic(kafka, unique_name):
    # Deterministic stand-in for rows a dying broker kept without acknowledging them: rows 40-59 are on
    # the topic from the first call, and the resumed call is handed rows 40-99 with its token.
    rows = [customer(i) for i in range(100)]
    with FeatureStore(kafka.config) as fs:
        group = fs.create_feature_group(customers_group(unique_name("resume"), offline=False))
        topic = fs.registry.topic_of(group.name)
        first = fs.ingest(group.name, rows[:60], progress=False)
        assert first.published == 60 and first.resume_token is None  # nothing to resume after a full success
        resumed = fs.ingest(group.name, rows[40:], progress=False, resume_token=first.api_invocation_time_ns)
    assert (resumed.already_published, resumed.published, resumed.api_invocation_time_ns) == (
        20, 40, first.api_invocation_time_ns)
    messages = read_topic(kafka.config, topic)
    assert sorted(m.key() for m in messages) == sorted(f"c{i}".encode() for i in range(100))
    # Every record carries the first call's invocation time, as if that call had published them all.
    assert {dict(m.headers())["fs-api-invocation-time"] for m in messages} == {
        str(first.api_invocation_time_ns).encode()}
