"""Processors and sinks on one host: /health and /ready answer, and a taken metrics port moves.

Issue 12 (probes for the Helm chart) and issue 10 item 5 (a second processor on the same host
died because its metrics port was taken).
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from featurestream.config import ENV_STATE_DIR
from featurestream.stack.ports import free_port
from featurestream.stack.workers import running_workers
from tests.integration.helpers import customers_group
from tests.integration.procs import Proc, stack_env
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration


def _get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())
    except OSError:
        return 0, {}


def test_two_processors_and_a_sink_on_one_host_all_serve_health_and_become_ready(store, stack, tmp_path,
                                                                                 unique_name):
    store.create_feature_group(customers_group(unique_name("probes"), partitions=2))
    state = tmp_path / "state"
    env = {ENV_STATE_DIR: str(state)}
    port = free_port()
    started = [
        Proc(stack, ["process", "--metrics-port", str(port)], tmp_path / "p1.log", extra_env=env),
        Proc(stack, ["process", "--metrics-port", str(port)], tmp_path / "p2.log", extra_env=env),
        Proc(stack, ["sink", "--metrics-port", str(free_port())], tmp_path / "s.log", extra_env=env),
    ]
    try:
        workers = wait_for(lambda: (w := running_workers(state)) and len(w) == 3 and w, timeout_s=60,
                           what="three workers announcing their metrics ports")
        assert all(p.alive() for p in started), "\n".join(p.tail() for p in started)
        procs = [w for w in workers if w.role == "processor"]
        assert sorted(w.port == port for w in procs) == [False, True]
        moved = next(w for w in procs if w.port != port)
        mover = next(p for p in started if p.popen.pid == moved.pid)
        assert f"metrics port {port} is taken" in mover.tail(), mover.tail()
        # What the other tests poll (procs.Proc.metrics_port): the port each worker really serves on.
        assert {p.popen.pid: p.metrics_port() for p in started} == {w.pid: w.port for w in workers}

        secrets = [stack.kafka_bootstrap, stack.redis_url, stack.s3_endpoint_url]
        for w in workers:
            assert _get(f"{w.url}/health") == (200, {"status": "ok"}), w
            status, body = wait_for(lambda w=w: (r := _get(f"{w.url}/ready"))[0] == 200 and r, timeout_s=90,
                                    what=f"{w.role} pid {w.pid} ready")
            assert body["status"] == "ready" and body["partitions"] >= 0
            assert not any(s and s in json.dumps(body) for s in secrets)

        out = subprocess.run([sys.executable, "-m", "featurestream.cli", "status"], env={**stack_env(stack), **env},
                             capture_output=True, text=True, timeout=60)
        for w in workers:
            assert f"pid {w.pid}, metrics on 127.0.0.1:{w.port}, ready" in out.stdout, out.stdout + out.stderr
    finally:
        for p in started:
            p.stop()
    assert running_workers(state) == []  # each removed its file on the way out


@pytest.mark.parametrize("engine", ["confluent", "faust"])
def test_workers_of_a_fresh_install_with_no_feature_group_are_ready(stack, tmp_path, unique_name, engine):
    """`helm install --wait` must not hang: with no group topic to be assigned yet, a worker that
    joined its consumer group is an idle member, and ready. With faust, three processors share two
    single-partition topics (the registry and faust's leader topic): the one left with nothing is
    ready too (a standby). The confluent engine subscribes to group topics only: none holds any."""
    env = {ENV_STATE_DIR: str(tmp_path / "state"), "FEATURESTREAM_TOPIC_PREFIX": unique_name("fresh")}
    started = [Proc(stack, [role, *(["--engine", engine] if role == "process" else []),
                            "--metrics-port", str(free_port())], tmp_path / f"{role}{i}.log", extra_env=env)
               for i, role in enumerate(("process", "process", "process", "sink"))]
    try:
        workers = wait_for(lambda: (w := running_workers(tmp_path / "state")) and len(w) == 4 and w, timeout_s=60,
                           what="four workers announcing their metrics ports")
        for w in workers:
            wait_for(lambda w=w: _get(f"{w.url}/ready")[0] == 200, timeout_s=60,
                     what=f"{w.role} ready with no feature group (last answer: {_get(f'{w.url}/ready')})")
        processors = sorted(_get(f"{w.url}/ready")[1]["partitions"] for w in workers if w.role == "processor")
        if engine == "faust":
            assert processors[0] == 0 and processors[-1] > 0, processors
        else:
            assert processors == [0, 0, 0], processors
    finally:
        for p in started:
            p.stop()


def _holdings(status_out: str, consumer_group: str, group_name: str) -> dict[str, set[int]]:
    """From `featurestream status`'s text: each member of ``consumer_group`` (its label up to the
    member id) → the partitions of feature group ``group_name`` it holds."""
    held: dict[str, set[int]] = {}
    member = None
    inside = False
    for line in status_out.splitlines():
        if line.startswith("consumer group "):
            inside = line.startswith(f"consumer group {consumer_group} (")
            member = None
        elif inside and line.startswith("  ") and not line.startswith("    ") and ": member " in line:
            member = line.strip().split(": member ")[0]
            held[member] = set()
        elif inside and member and line.startswith(f"    {group_name}: partitions "):
            parts = line.split(": partitions ", 1)[1].split(", ")
            held[member] |= {int(p.split(" ")[0]) for p in parts}
    return held


@pytest.mark.parametrize("engine", ["confluent", "faust"])
def test_status_shows_which_worker_holds_which_partitions(stack, tmp_path, unique_name, engine):
    from dataclasses import replace

    from featurestream.sdk import FeatureStore

    prefix = unique_name("assign")
    cfg = replace(stack, topic_prefix=prefix)
    with FeatureStore(cfg) as store:
        g = store.create_feature_group(customers_group(unique_name("held"), partitions=4))
    started = [Proc(cfg, ["process", "--engine", engine, "--metrics-port", str(free_port())], tmp_path / f"p{i}.log")
               for i in range(2)]
    started.append(Proc(cfg, ["sink", "--metrics-port", str(free_port())], tmp_path / "s.log"))
    try:
        def status_out() -> str:
            out = subprocess.run([sys.executable, "-m", "featurestream.cli", "status"], env=stack_env(cfg),
                                 capture_output=True, text=True, timeout=60)
            return out.stdout

        def settled() -> tuple[str, dict, dict] | None:
            assert all(p.alive() for p in started), "\n".join(p.tail() for p in started)
            out = status_out()
            online, offline = _holdings(out, f"{prefix}-online", g.name), _holdings(out, f"{prefix}-offline", g.name)
            if len(online) == 2 and all(online.values()) and sum(map(len, online.values())) == 4 and offline:
                return out, online, offline
            return None

        out, online, offline = wait_for(settled, timeout_s=120, interval_s=1,
                                        what=f"status to show two processors sharing the 4 partitions ({engine})")
        first, second = online.values()
        assert first.isdisjoint(second) and first | second == {0, 1, 2, 3}, out
        shown = {int(label.split(" pid ")[1].split(" ")[0]) for label in online}
        assert shown == {started[0].popen.pid, started[1].popen.pid}, out
        assert all(label.startswith("processor pid ") for label in online), out
        assert list(offline.values()) == [{0, 1, 2, 3}], out
        (sink_label,) = offline
        assert sink_label.startswith(f"sink pid {started[2].popen.pid} on "), out
        assert "(lag " in out and "unassigned" not in out, out
    finally:
        for p in started:
            p.stop()
