"""Freshness as a metric (issue 20 item 3) on the real stack: every record a processor (either engine)
applies and a sink commits is counted once in ``featurestream_freshness_seconds{store, group}``, and
`featurestream status` prints the group's p50/p99 for both stores."""

from __future__ import annotations

import subprocess
import sys
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from featurestream.config import ENV_STATE_DIR
from featurestream.stack.ports import free_port
from featurestream.stack.workers import running_workers
from tests.integration.helpers import customer, customers_group
from tests.integration.procs import Proc, stack_env, worker_ready
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration
RECORDS = 600


def freshness_count(url: str, store: str, group: str) -> float:
    """``featurestream_freshness_seconds_count`` of (store, group) at a worker's /metrics (0: none)."""
    try:
        with urllib.request.urlopen(f"{url}/metrics", timeout=5) as resp:
            text = resp.read().decode()
    except OSError:
        return 0.0
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == "featurestream_freshness_seconds_count"
               and s.labels == {"store": store, "group": group})


@pytest.mark.parametrize("engine", ["confluent", "faust"])
def test_every_applied_and_committed_record_is_timed_and_status_prints_p50_p99(store, stack, tmp_path, unique_name,
                                                                               engine):
    g = store.create_feature_group(customers_group(unique_name(f"fresh-{engine}"), partitions=2))
    state = tmp_path / "state"
    env = {ENV_STATE_DIR: str(state)}
    workers = [Proc(stack, ["process", "--engine", engine, "--metrics-port", str(free_port())], tmp_path / "p.log", extra_env=env),
               Proc(stack, ["sink", "--metrics-port", str(free_port()), "--max-age-s", "1"], tmp_path / "s.log", extra_env=env)]
    try:
        found = wait_for(lambda: (w := running_workers(state)) and len(w) == 2 and w, timeout_s=60,
                         what="the processor and the sink announcing their metrics ports")
        urls = {w.role: w.url for w in found}
        for w in found:
            wait_for(lambda w=w: worker_ready(w.port), timeout_s=120, what=f"{w.role} ready\n"
                     + "\n".join(p.tail() for p in workers))
        store.ingest(g.name, [customer(i, second=i) for i in range(RECORDS)], progress=False)
        wait_for(lambda: freshness_count(urls["processor"], "online", g.name) >= RECORDS, timeout_s=120,
                 what=f"the processor to time {RECORDS} records\n{workers[0].tail()}")
        wait_for(lambda: freshness_count(urls["sink"], "offline", g.name) >= RECORDS, timeout_s=120,
                 what=f"the sink to time {RECORDS} committed rows\n{workers[1].tail()}")
        # each store times its own records only
        assert freshness_count(urls["processor"], "offline", g.name) == 0
        assert freshness_count(urls["sink"], "online", g.name) == 0

        out = subprocess.run([sys.executable, "-m", "featurestream.cli", "status"], env={**stack_env(stack), **env},
                             capture_output=True, text=True, timeout=60)
        line = next((ln for ln in out.stdout.splitlines() if ln.startswith(g.name + " ")), None)
        assert line is not None, out.stdout + out.stderr
        cells = line.split()
        assert len(cells) == 5, line  # name, online lag, offline lag, online p50/p99, offline p50/p99
        for cell in cells[3:]:
            p50, _, p99 = cell.partition("/")
            assert p50 and p99 and p50 != "-" and p99 != "-", line
        assert "p50/p99" in out.stdout
    finally:
        for p in workers:
            p.stop()
