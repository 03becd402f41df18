"""Scale-out, proven with local processes (issue 12): a 6-partition group served by 3 processors,
2 sinks and 2 API servers while records are published at a steady rate. Every worker is rolled in
turn, once with SIGTERM and once with kill -9 (and restarted), while publishing goes on and an HTTP
reader keeps calling GetRecord on the API servers. Then the result must be what a single worker
gives, checked against ground truth computed from the topic alone:

- online: the latest record per id, for every id;
- offline: every (partition, offset) of the topic exactly once in the Iceberg table;
- HTTP: errors counted and stated; none outside an API server's own restart.

It also measures the pause a rebalance causes: a probe publishes a marker with a fresh value every
100 ms to a random probe id and polls Redis until it is readable; the publish-to-readable latencies
(p50/p99/max, overall and during the rolls) are printed, not asserted (no timed tests). Run alone
with ``pytest -m scale -s``. The plain run uses the session's Redis, the second a 3-node Redis
Cluster.
"""

from __future__ import annotations

import os
import random
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError

from featurestream.config import Config
from featurestream.sdk import FeatureStore
from featurestream.stack.ports import free_port
from schemas.group import FeatureGroup
from tests.integration.auditor_watch import AuditorWatch
from tests.integration.helpers import customer, customers_group
from tests.integration.procs import Proc, stack_env, worker_ready
from tests.support.http_api import healthy, server_env
from tests.support.online_oracle import expected_online_state, online_state, topic_records
from tests.support.redis_cluster import redis_cluster
from tests.support.wait import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.scale]

ROWS = 200_000            # records published during the test, at least (the probe's markers come on top)
RATE = 700                # records/s: 200k take ~290 s, spread over which the 14 rolls run (~10-20 s each here)
IDS = 20_000
PARTITIONS = 6
PROCESSORS, SINKS, APIS = 3, 2, 2
PROBE_EVERY_S = 0.1
PROBE_IDS = 50
MARKER_EPOCH = datetime(2040, 1, 1, tzinfo=UTC)  # after every published event time: a marker always wins


# ------------------------------------------------------------------ the fleet

@dataclass
class Worker:
    """One processor, sink or API server: started, rolled (SIGTERM or kill -9) and restarted on the
    same port, so readers and probes find it where it was (as behind a Kubernetes Service)."""

    name: str
    args: list[str]
    cfg: Config
    logs: Path
    port: int
    env: dict[str, str] = field(default_factory=dict)
    proc: Proc | None = None
    restarting: bool = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = Proc(self.cfg, self.args, self.logs / f"{self.name}.log", extra_env=self.env)

    def ready(self) -> bool:
        assert self.proc is not None and self.proc.alive(), f"{self.name} exited:\n{self.proc and self.proc.tail()}"
        return healthy(self.url) if self.name.startswith("api") else worker_ready(self.port)

    def roll(self, how: str) -> None:
        assert self.proc is not None
        self.restarting = True
        self.proc.stop() if how == "SIGTERM" else self.proc.kill()
        self.start()
        wait_for(self.ready, timeout_s=120, interval_s=0.1, what=f"{self.name} ready after {how}")
        self.restarting = False


def fleet(cfg: Config, logs: Path) -> list[Worker]:
    workers = []
    for i in range(PROCESSORS):
        port = free_port()
        workers.append(Worker(f"processor{i}", ["process", "--metrics-port", str(port), "--log-level", "warning"],
                              cfg, logs, port))
    for i in range(SINKS):
        port = free_port()
        workers.append(Worker(f"sink{i}", ["sink", "--metrics-port", str(port), "--max-age-s", "5"], cfg, logs,
                              port))
    for i in range(APIS):
        port = free_port()
        # One worker process per server: two servers already give the machine's two cores a reader each.
        workers.append(Worker(f"api{i}", ["serve", "--port", str(port), "--workers", "1"], cfg, logs, port,
                              env=server_env(cfg)))
    return workers


# ------------------------------------------------------------------ load, reader, probe

class SteadyPublisher(threading.Thread):
    """Publishes at RATE records/s (random ids, random event times, so out of order): ROWS records, and
    more while the rolls are not done (a loaded machine rolls slower), so every roll happens under load."""

    def __init__(self, store: FeatureStore, group: str) -> None:
        super().__init__(name="publisher", daemon=True)
        self.store, self.group = store, group
        self.published = 0
        self.failed: list[BaseException] = []
        self.elapsed_s = 0.0
        self.rolls_done = threading.Event()

    def run(self) -> None:
        rng = random.Random(12)
        started = time.monotonic()
        try:
            i = 0
            while (i < ROWS or not self.rolls_done.is_set()) and i < 2 * ROWS:
                if i % 100 == 0:
                    time.sleep(max(0.0, started + i / RATE - time.monotonic()))
                row = customer(rng.randrange(IDS), second=rng.randrange(3600), age=rng.randrange(100))
                self.store.put_record_async(self.group, row).add_done_callback(self._done)
                i += 1
                self.published = i
            self.store.publisher.flush()
        except BaseException as exc:  # noqa: BLE001 - reported by the test, which would otherwise hang
            self.failed.append(exc)
        self.elapsed_s = time.monotonic() - started

    def _done(self, future) -> None:
        if future.exception() is not None:
            self.failed.append(future.exception())


class HttpReader(threading.Thread):
    """GetRecord through boto3, alternating between the API servers; tallies every answer by server,
    by whether that server was restarting, and by outcome."""

    def __init__(self, apis: list[Worker], group: str, key: str, secret: str) -> None:
        super().__init__(name="http-reader", daemon=True)
        self.apis, self.group = apis, group
        self.key, self.secret = key, secret
        self.tally: Counter[tuple[str, str, str]] = Counter()
        self.calls: list[tuple[float, str, str]] = []  # (when, server, outcome)
        self.stop_event = threading.Event()

    def _client(self, api: Worker):
        import boto3

        return boto3.client("sagemaker-featurestore-runtime", endpoint_url=api.url, region_name="us-east-1",
                            aws_access_key_id=self.key, aws_secret_access_key=self.secret,
                            config=BotoConfig(retries={"total_max_attempts": 1, "mode": "standard"},
                                              connect_timeout=2, read_timeout=10))

    def run(self) -> None:
        clients = {api.name: self._client(api) for api in self.apis}
        rng = random.Random(5)
        i = 0
        while not self.stop_event.is_set():
            api = self.apis[i % len(self.apis)]
            i += 1
            restarting = api.restarting
            try:
                answer = clients[api.name].get_record(FeatureGroupName=self.group,
                                                      RecordIdentifierValueAsString=f"c{rng.randrange(IDS)}")
                outcome = "found" if answer.get("Record") else "not found (yet)"
            except ClientError as exc:
                meta = exc.response.get("ResponseMetadata", {})
                outcome = f"HTTP {meta.get('HTTPStatusCode')} {exc.response.get('Error', {}).get('Code')}"
            except BotoCoreError as exc:
                outcome = f"no answer ({type(exc).__name__})"
            when = "during its restart" if restarting or api.restarting else "outside its restart"
            self.tally[(api.name, when, outcome)] += 1
            self.calls.append((time.monotonic(), api.name, outcome))
            self.stop_event.wait(0.02)

    def errors(self, when: str) -> dict[tuple[str, str], int]:
        return {(api, outcome): n for (api, w, outcome), n in self.tally.items()
                if w == when and outcome not in ("found", "not found (yet)")}


class FreshnessProbe(threading.Thread):
    """Every PROBE_EVERY_S: publish a marker (a fresh ``visits`` value, an event time after all others)
    to a random probe id, and poll Redis until it (or a later marker of that id) is readable; many
    markers are in flight at once, so a pause shows as a run of long latencies, not as one sample.
    ``samples`` holds (publish time, publish-to-readable seconds). Its own FeatureStore (so its own
    producer): markers never queue behind the bulk load inside one producer."""

    def __init__(self, store: FeatureStore, group: FeatureGroup) -> None:
        super().__init__(name="freshness-probe", daemon=True)
        self.store, self.group = store, group
        self.samples: list[tuple[float, float]] = []
        self.unread: list[tuple[str, int, float]] = []
        self.stop_event = threading.Event()
        self.failed: list[BaseException] = []

    def run(self) -> None:
        rng = random.Random(8)
        seq = 0
        next_at = time.monotonic()
        try:
            while not self.stop_event.is_set() or self.unread:
                now = time.monotonic()
                if now >= next_at and not self.stop_event.is_set():
                    seq += 1
                    rid = f"probe{rng.randrange(PROBE_IDS)}"
                    marker = {**customer(0), "customer_id": rid, "visits": seq,
                              "event_time": (MARKER_EPOCH + timedelta(seconds=seq)).strftime("%Y-%m-%dT%H:%M:%SZ")}
                    self.store.put_record_async(self.group.name, marker).add_done_callback(self._acked)
                    self.unread.append((rid, seq, now))
                    next_at = now + PROBE_EVERY_S
                self._poll()
                if self.stop_event.is_set() and self.unread and time.monotonic() > next_at + 120:
                    raise AssertionError(f"markers never became readable: {self.unread[:5]}")
                time.sleep(0.005)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.failed.append(exc)

    def caught_up(self, age_s: float) -> bool:
        """True when every marker published more than ``age_s`` ago is readable."""
        now = time.monotonic()
        return all(now - at < age_s for _, _, at in self.unread)

    def _acked(self, future) -> None:
        if future.exception() is not None:
            self.failed.append(future.exception())

    def _poll(self) -> None:
        if not self.unread:
            return
        ids = sorted({rid for rid, _, _ in self.unread})
        got = self.store.online.batch_get([(self.group, ids, ["visits"])])
        seen = {r.record_id: r.record.get("visits", 0) for r in got.records}
        now = time.monotonic()
        still = []
        for rid, seq, at in self.unread:
            if seen.get(rid, 0) >= seq:  # a later marker of the same id is later in its partition too
                self.samples.append((at, now - at))
            else:
                still.append((rid, seq, at))
        self.unread = still


def percentiles(latencies: list[float]) -> str:
    if len(latencies) < 2:
        return f"{len(latencies)} samples"
    q = statistics.quantiles(latencies, n=100, method="inclusive")
    return (f"p50 {q[49] * 1000:,.0f} ms, p99 {q[98] * 1000:,.0f} ms, max {max(latencies) * 1000:,.0f} ms "
            f"({len(latencies)} markers)")


# ------------------------------------------------------------------ the roll

def run_roll(cfg: Config, tmp_path: Path, group_name: str, label: str) -> None:
    t_begin = time.monotonic()
    workers = fleet(cfg, tmp_path)
    with FeatureStore(cfg) as store:
        g = store.create_feature_group(customers_group(group_name, partitions=PARTITIONS))
        topic = store.registry.topic_of(g.name)
        publisher = SteadyPublisher(store, g.name)
        probe_store = FeatureStore(cfg)
        probe = FreshnessProbe(probe_store, g)
        reader = HttpReader([w for w in workers if w.name.startswith("api")], g.name,
                            cfg.aws_access_key_id or "featurestream",
                            cfg.aws_secret_access_key or "featurestream-local-secret")
        windows: list[tuple[str, str, float, float]] = []
        # Issue 20's "no false alarms": the continuous auditor watches the rolls (it is not rolled itself).
        auditor = AuditorWatch(cfg, tmp_path / "auditor.log", interval_s=10)
        try:
            for w in workers:
                w.start()
            for w in workers:
                wait_for(w.ready, timeout_s=120, interval_s=0.2, what=f"{w.name} ready")
            print(f"\n[{label}] fleet of {len(workers)} ready {time.monotonic() - t_begin:.0f} s after the start",
                  flush=True)
            t0 = time.monotonic()
            publisher.start()
            probe.start()
            reader.start()
            rolls = [(how, w) for how in ("SIGTERM", "kill -9") for w in workers]
            spacing_s = ROWS / RATE / (len(rolls) + 1)
            for k, (how, w) in enumerate(rolls, start=1):
                # Pacing, not waiting on a condition: the rolls are spread over the publishing time...
                time.sleep(max(0.0, t0 + k * spacing_s - time.monotonic()))
                # ...and each starts once the pipeline is over the previous one (below), so the pause a
                # roll shows is its own, not a chain of back-to-back rolls.
                start = time.monotonic()
                w.roll(how)
                ready = time.monotonic()
                # The roll's window lasts until the pipeline is over it: a restarted worker is ready once
                # it joined, but the partitions it (or the rebalance) held back may still be catching up.
                wait_for(lambda: probe.caught_up(1.0) or probe.failed, timeout_s=120, interval_s=0.1,
                         what=f"the pipeline to recover from the {how} of {w.name}")
                windows.append((how, w.name, start, time.monotonic()))
                print(f"[{label}] {how} {w.name}: ready again after {ready - start:.1f} s, pipeline recovered "
                      f"after {windows[-1][3] - start:.1f} s ({publisher.published:,} published)", flush=True)
            rolls_done = time.monotonic() - t0
            publisher.rolls_done.set()
            publisher.join(timeout=max(1.0, ROWS / RATE * 3 - (time.monotonic() - t0)))
            assert not publisher.is_alive(), "the publisher did not finish"
            assert publisher.failed == [], publisher.failed[:3]
            probe.stop_event.set()
            reader.stop_event.set()
            probe.join(timeout=180)
            reader.join(timeout=30)
            assert probe.failed == [], probe.failed
            print(f"[{label}] rolls done {rolls_done:.0f} s after publishing began; {publisher.published:,} records "
                  f"published in {publisher.elapsed_s:.0f} s", flush=True)

            # Online: every id equals the latest record per id, computed from the topic alone.
            expected = expected_online_state(cfg, topic)
            ids = sorted(expected)
            wait_for(lambda: online_state(store, g, ids) == expected, timeout_s=300, interval_s=2,
                     what="the online store to equal the topic's latest record per id")
            print(f"[{label}] online store equal to the topic for all {len(ids):,} ids "
                  f"{time.monotonic() - t0:.0f} s after publishing began", flush=True)

            status = subprocess.run([sys.executable, "-m", "featurestream.cli", "status"], env=stack_env(cfg),
                                    capture_output=True, text=True, timeout=60)
            print(f"[{label}] `featurestream status` after the rolls:\n{status.stdout}", flush=True)

            # Offline: every (partition, offset) of the topic exactly once.
            on_topic = {(p, o) for p, o, _ in topic_records(cfg, topic)}
            assert len(on_topic) == publisher.published + len(probe.samples) >= ROWS

            def offline_coords() -> Counter:
                rows = store.query(f'SELECT _kafka_partition AS p, _kafka_offset AS o FROM "{g.name}"').to_pylist()
                return Counter((r["p"], r["o"]) for r in rows)

            count = f'SELECT count(*) AS n FROM "{g.name}"'
            wait_for(lambda: store.query(count).column("n")[0].as_py() >= len(on_topic), timeout_s=300,
                     interval_s=5, what="the sinks to write every record")
            coords = offline_coords()
            assert [c for c, n in coords.items() if n > 1] == []
            assert set(coords) == on_topic
            print(f"[{label}] offline table holds all {len(on_topic):,} offsets exactly once "
                  f"{time.monotonic() - t0:.0f} s after publishing began", flush=True)
            for w in workers:
                assert w.proc is not None and w.proc.alive(), f"{w.name} died:\n{w.proc and w.proc.tail()}"
            parity = auditor.final(g.name)
            print(f"[{label}] auditor: {parity.line()}", flush=True)
            assert auditor.proc.alive(), auditor.proc.tail()
            assert parity.mismatches == {"online": 0, "offline": 0}, f"{parity.line()}\n{auditor.proc.tail()}"
            assert parity.checked["online"] > 0 and parity.checked["offline"] > 0, parity.line()
            assert parity.in_flight["online"] + parity.in_flight["offline"] > 0, parity.line()
        finally:
            auditor.stop()
            publisher.rolls_done.set()
            probe.stop_event.set()
            reader.stop_event.set()
            probe.join(timeout=30)
            probe_store.close()
            for w in workers:
                if w.proc is not None:
                    w.proc.stop()
    _report(label, probe, reader, windows, time.monotonic() - t_begin)


def _report(label: str, probe: FreshnessProbe, reader: HttpReader, windows: list[tuple[str, str, float, float]],
            total_s: float) -> None:
    """Print the figures (the pause each roll caused, the HTTP answers), then assert on the HTTP errors."""
    def within(at: float, d: float, how: str | None = None, kind: str = "") -> bool:
        """Whether a marker published at ``at`` and readable ``d`` later was in flight during a roll."""
        return any(at <= e and at + d >= s for h, n, s, e in windows
                   if (how is None or h == how) and n.startswith(kind))

    lat = probe.samples
    print(f"\n[{label}] publish-to-readable (Redis) of the probe's markers (\"during\": in flight at some time "
          f"between a roll's signal and the pipeline's recovery from it), load average {os.getloadavg()[0]:.1f}:")
    print(f"  {'overall:':<26}{percentiles([d for _, d in lat])}")
    print(f"  {'during the rolls:':<26}{percentiles([d for at, d in lat if within(at, d)])}")
    print(f"  {'outside the rolls:':<26}{percentiles([d for at, d in lat if not within(at, d)])}")
    for how in ("SIGTERM", "kill -9"):
        print(f"  {'during ' + how + ' rolls:':<26}{percentiles([d for at, d in lat if within(at, d, how)])}")
        for kind in ("processor", "sink", "api"):
            name = f"  {how} of a {kind}:"
            print(f"  {name:<26}{percentiles([d for at, d in lat if within(at, d, how, kind)])}")
    print(f"[{label}] each roll: seconds from the signal until the pipeline recovered (no marker older than 1 s "
          "unread); markers in flight meanwhile, the slowest one's publish-to-readable; GetRecord calls to that "
          "server meanwhile:")
    for how, name, s, e in windows:
        during = [d for at, d in lat if at <= e and at + d >= s]
        calls = Counter(o for at, api, o in reader.calls if api == name and s <= at <= e)
        slowest = f"{max(during) * 1000:,.0f} ms" if during else "-"
        print(f"  {how:<8} {name:<11} {e - s:5.1f} s  {len(during):3d} markers, slowest {slowest:>9}"
              + (f"  calls: {dict(calls)}" if name.startswith("api") else ""))
    print(f"[{label}] HTTP GetRecord answers (server, when, outcome):")
    for (api, when, outcome), n in sorted(reader.tally.items()):
        print(f"  {api} {when}: {outcome}: {n:,}")
    print(f"[{label}] total run time {total_s:.0f} s", flush=True)
    outside = reader.errors("outside its restart")
    assert outside == {}, f"GetRecord failed on an API server that was not restarting: {outside}"
    assert sum(n for (_, w, o), n in reader.tally.items() if o == "found") > 1000, reader.tally
    during_restart = reader.errors("during its restart")
    assert all(o.startswith("no answer") for _, o in during_restart), (
        f"an API server answered with an error while restarting (expected only refused connections): "
        f"{during_restart}")


# ------------------------------------------------------------------ the tests

@pytest.mark.timeout(900)
def test_rolling_every_worker_under_load_gives_the_single_worker_result(stack: Config, tmp_path, unique_name):
    cfg = replace(stack, topic_prefix=f"{stack.topic_prefix}-scale")
    run_roll(cfg, tmp_path, unique_name("scale"), "plain Redis")


@pytest.fixture
def redis_cluster_url(tmp_path: Path) -> Iterator[str]:
    with redis_cluster(tmp_path / "redis-cluster") as url:
        yield url


@pytest.mark.timeout(900)
def test_rolling_every_worker_under_load_on_a_redis_cluster(stack: Config, tmp_path, unique_name,
                                                            redis_cluster_url):
    cfg = replace(stack, topic_prefix=f"{stack.topic_prefix}-scalec", redis_url=redis_cluster_url)
    run_roll(cfg, tmp_path, unique_name("scalec"), "Redis Cluster")
