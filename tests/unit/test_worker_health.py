"""/health and /ready of the processor and the sink: the readiness rule, and the HTTP server."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

import streams.metrics  # noqa: F401 - registers featurestream's counters, which /metrics must show
from featurestream.stack.ports import free_port
from streams.health import Readiness, WorkerHealth
from streams.metrics_server import serve_metrics
from tests.support.wait import wait_for


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_not_ready_until_joined_then_ready_while_the_loop_turns() -> None:
    clock = FakeClock()
    health = WorkerHealth(max_silence_s=30, clock=clock)
    assert not health.readiness().ready
    health.joined(3)
    assert health.readiness() == Readiness(True, "assigned and consuming", 3)
    clock.now += 29
    assert health.readiness().ready
    clock.now += 2  # 31 s without a loop pass
    state = health.readiness()
    assert not state.ready and "30 s" in state.reason
    health.beat()
    assert health.readiness().ready


def test_an_idle_member_with_no_partitions_is_ready() -> None:
    health = WorkerHealth()
    health.joined(0)  # more workers than partitions: a standby must not block rollouts
    assert health.readiness().ready


def test_a_rebalance_and_a_failing_backend_make_it_not_ready() -> None:
    health = WorkerHealth()
    health.joined(2)
    health.left()
    assert not health.readiness().ready
    health.joined(1)
    health.failing("applying records to the online store failed; retrying")
    assert health.readiness() == Readiness(False, "applying records to the online store failed; retrying", 1)
    health.recovered()
    assert health.readiness().ready


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.fixture
def server_and_health():
    health = WorkerHealth()
    server = serve_metrics(0, ready=health.readiness, role="test")
    yield server, health
    server.close()


def test_the_server_answers_metrics_health_and_ready(server_and_health) -> None:
    server, health = server_and_health
    base = f"http://127.0.0.1:{server.port}"
    status, body = _get(f"{base}/metrics")
    assert status == 200 and b"featurestream_online_records" in body
    assert _get(f"{base}/health") == (200, b'{"status": "ok"}')
    status, body = _get(f"{base}/ready")
    assert status == 503
    assert json.loads(body) == {"status": "not ready", "partitions": 0,
                                "reason": "not yet assigned partitions by its consumer group"}
    health.joined(4)
    status, body = _get(f"{base}/ready")
    assert status == 200 and json.loads(body)["partitions"] == 4
    assert _get(f"{base}/nope")[0] == 404


def test_a_taken_port_falls_back_to_a_free_one_and_logs_it(caplog) -> None:
    first = serve_metrics(0, role="first")
    try:
        with caplog.at_level("WARNING", logger="featurestream.metrics"):
            second = serve_metrics(first.port, role="second")
        try:
            assert second.port != first.port
            assert [r.getMessage() for r in caplog.records] == [
                f"second: metrics port {first.port} is taken (another worker on this host?); serving /metrics, "
                f"/health and /ready on 127.0.0.1:{second.port} instead"]
            for port in (first.port, second.port):
                assert _get(f"http://127.0.0.1:{port}/health")[0] == 200
        finally:
            second.close()
    finally:
        first.close()


CHILD = """
import sys, time
from streams.metrics_server import serve_metrics
server = serve_metrics(int(sys.argv[1]), role="child")
print(server.port, flush=True)
time.sleep(60)
"""


def test_two_processes_asking_for_the_same_default_port_both_serve() -> None:
    port = free_port()
    mine = serve_metrics(port, role="parent")
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(port)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        assert mine.port == port
        line = child.stdout.readline()  # the child prints its bound port once it serves
        assert line.strip().isdigit(), child.stderr.read()
        theirs = int(line)
        assert theirs != port
        wait_for(lambda: _get(f"http://127.0.0.1:{theirs}/metrics")[0] == 200, timeout_s=10,
                 what="the second process's /metrics")
        assert _get(f"http://127.0.0.1:{port}/metrics")[0] == 200
        assert child.poll() is None, "the second process died instead of moving to a free port"
    finally:
        child.kill()
        child.wait()
        mine.close()
