"""Benchmark: the online path (Kafka → faust processor → Redis → get_record), each against a baseline.

  (a) throughput  publish --records records to a group, then time how fast
                  `featurestream process` (a subprocess, fresh consumer group) applies them,
                  polling its Prometheus counter featurestream_online_records_total, against a
                  baseline in the same run: raw confluent-kafka consuming the same topic and
                  writing plain pipelined HSETs with redis-py (batches of --batch-size).
                  Rates are first-record-to-last (startup and rebalance excluded; also printed).
  (b) freshness   --rate records/s (default 5,000) for --steady-seconds, produced through the SDK's
                  publisher; records are validated and encoded before the clock starts and the
                  send time (ns) is patched into feature ``visits``, so the load generator does not
                  eat the CPU the processor needs; a reader thread polls batch_get_record for
                  ~200 samples a second until readable: p50/p99.
  (b2) search     (--only search) the highest steady rate with p99 <= 100 ms: doubling from
                  --rate, then bisecting. Each step also prints publish-to-acknowledged p99. Past
                  the first failing rate, the processor is stopped and the same loads run at that
                  rate and at 10,000/s with nothing reading: the broker's acknowledgement latency
                  alone, without the processor's CPU beside it.
  (c) reads       FeatureStore.get_record vs raw redis-py HGETALL on the same keys, p50/p99.
  (d) memory      the processor's RSS during (b)'s steady load: at start, end and peak.

Each phase uses its own topic prefix, so the processor always starts in a fresh consumer group
(`<prefix>-online`) and other processors on the same stack never see the benchmark's topics.
--engines confluent,faust (the default) measures both processor engines side by side, each in
(a) and (b); BENCH_APPLY_IN_THREAD=1 runs the faust engine with --apply-in-thread (one process), and
BENCH_FETCH_WAIT_MS=N the confluent engine with --fetch-wait-ms N (0: librdkafka's fetch defaults).
Everything is bounded in count and time and talks to loopback endpoints from Config.from_env():

  eval "$(.venv/bin/featurestream up)"
  .venv/bin/python bench/online.py [--records 200000] [--runs 3] [--steady-seconds 60] [--rate 5000]
"""

# ruff: noqa: E402  (the sys.path fix below must run before the imports)
from __future__ import annotations

import sys
from pathlib import Path

# Benchmarks import bench._common and tests.integration.helpers: run with the repository
# root on sys.path instead of this folder.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [str(_HERE.parent)] + [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import argparse
import gc
import os
import random
import re
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request
from collections import deque
from dataclasses import dataclass, replace
from typing import Any

from bench._common import (
    customer,
    customers_group,
    load_average,
    median,
    percentile,
    process_cpu,
    rss_mb,
    service_pid,
    thread_cpu,
)
from featurestream.config import ENV_TOPIC_PREFIX, Config
from featurestream.sdk import FeatureStore
from schemas.eventtime import format_iso
from schemas.names import online_key
from schemas.validate import compile_validator
from schemas.wire import encode
from tests.integration.procs import child_pids, terminate

GROUP = "customers"
# 19 digits like time.time_ns() until 2286: replaced in place by the send time (see freshness).
_SENT_PLACEHOLDER = b"1999999999999999999"
_METRIC = re.compile(r'^featurestream_online_records_total\{group="([^"]*)",status="([^"]*)"\} ([0-9.e+]+)$', re.M)


# -- the processor subprocess --------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Processor:
    """`featurestream process` in a subprocess with its own topic prefix; stopped by its pid."""

    def __init__(self, prefix: str, batch_size: int, log_dir: Path, switch_interval: float | None = None,
                 engine: str = "confluent") -> None:
        self.port = free_port()
        env = {**os.environ, ENV_TOPIC_PREFIX: prefix}
        self.log_path = log_dir / f"processor-{prefix}.log"
        self._log = self.log_path.open("wb")
        self.started = time.perf_counter()
        cmd = [sys.executable, "-m", "featurestream.cli"]
        if switch_interval:
            # Experiment knob: the processor's apply_batch thread and faust's event loop share the
            # GIL; a shorter switch interval shortens each hand-over (default 5 ms).
            cmd = [sys.executable, "-c", "import sys; sys.setswitchinterval(float(sys.argv.pop(1))); "
                   "from featurestream.cli import main; sys.exit(main())", str(switch_interval)]
        self.proc = subprocess.Popen(
            [*cmd, "process", "--engine", engine, "--metrics-port", str(self.port), "--batch-size", str(batch_size),
             "--batch-wait-ms", os.environ.get("BENCH_BATCH_WAIT_MS", "5"), "--log-level", "warning",
             *(["--apply-in-thread"] if os.environ.get("BENCH_APPLY_IN_THREAD") else []),
             *(["--fetch-wait-ms", os.environ["BENCH_FETCH_WAIT_MS"]] if os.environ.get("BENCH_FETCH_WAIT_MS") else [])],
            env=env, stdout=self._log, stderr=subprocess.STDOUT, cwd=str(Path(__file__).resolve().parents[1]))

    def records_seen(self, group: str) -> int | None:
        """Sum of the processor's per-status counters for ``group`` (None until /metrics answers)."""
        if self.proc.poll() is not None:
            raise RuntimeError(f"the processor exited with status {self.proc.returncode}; see {self.log_path}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=2) as resp:
                text = resp.read().decode()
        except OSError:
            return None
        return int(sum(float(v) for g, _s, v in _METRIC.findall(text) if g == group))

    def batch_stats(self) -> tuple[float, int]:
        """(seconds spent in apply_batch, number of batches) from the processor's histogram."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=2) as resp:
            text = resp.read().decode()
        total = re.search(r"^featurestream_online_batch_seconds_sum ([0-9.e+]+)$", text, re.M)
        count = re.search(r"^featurestream_online_batch_seconds_count ([0-9.e+]+)$", text, re.M)
        return (float(total.group(1)) if total else 0.0), (int(float(count.group(1))) if count else 0)

    def pids(self) -> list[int]:
        """The processor and its apply process (featurestream.apply_child)."""
        return [self.proc.pid, *child_pids(self.proc.pid)]

    def rss_mb(self) -> float:
        return sum(rss_mb(pid) for pid in self.pids())

    def stop(self) -> None:
        terminate(self.proc, grace_s=20)
        self._log.close()


# -- helpers -------------------------------------------------------------------------------------

def wipe_keys(client: Any, pattern: str) -> None:
    batch = []
    for key in client.scan_iter(match=pattern, count=5000):
        batch.append(key)
        if len(batch) >= 5000:
            client.unlink(*batch)
            batch = []
    if batch:
        client.unlink(*batch)


def setup_group(config: Config, prefix: str, partitions: int) -> FeatureStore:
    fs = FeatureStore(replace(config, topic_prefix=prefix))
    fs.create_feature_group(customers_group(GROUP, partitions=partitions, offline=False))
    return fs


def teardown(fs: FeatureStore, redis_client: Any, prefix: str) -> None:
    try:
        fs.delete_feature_group(GROUP)
    except Exception as exc:  # never hide the benchmark's figures behind a cleanup error
        print(f"  (cleanup: could not delete the bench group: {exc})")
    wipe_keys(redis_client, f"{prefix}:*")
    fs.close()


# -- (a) throughput ------------------------------------------------------------------------------

def raw_baseline(config: Config, topic: str, n: int, batch_size: int, redis_client: Any, key_prefix: str,
                 timeout_s: float) -> tuple[float, float]:
    """Consume ``topic`` with plain confluent-kafka, HSET every record pipelined per batch.

    Returns (seconds from the first record to the last written, seconds including startup).
    """
    import orjson
    from confluent_kafka import Consumer

    from streams.kafka_client import FAST_DRAIN

    consumer = Consumer({"bootstrap.servers": config.require("kafka_bootstrap"),
                         "group.id": f"{key_prefix}-raw-{time.time_ns()}", "auto.offset.reset": "earliest",
                         "enable.auto.commit": False, **FAST_DRAIN})  # as the processor's consumer
    started = time.perf_counter()
    consumer.subscribe([topic])
    done = 0
    first = None
    dumps, loads = orjson.dumps, orjson.loads
    deadline = time.monotonic() + timeout_s
    try:
        while done < n:
            if time.monotonic() > deadline:
                raise RuntimeError(f"raw baseline: {done} of {n} records in {timeout_s:.0f} s")
            msgs = consumer.consume(num_messages=batch_size, timeout=0.1)
            if not msgs:
                continue
            if first is None:
                first = time.perf_counter()
            pipe = redis_client.pipeline(transaction=False)
            for m in msgs:
                if m.error():
                    raise RuntimeError(f"raw baseline: {m.error()}")
                obj = loads(m.value())
                mapping = {k: dumps(v) for k, v in obj["record"].items() if v is not None}
                pipe.hset(f"{key_prefix}:{obj['id']}", mapping=mapping)
            pipe.execute()
            consumer.commit(asynchronous=True)  # at-least-once, like the processor: after the write
            done += len(msgs)
        end = time.perf_counter()
    finally:
        consumer.close()
    return end - (first or started), end - started


def processor_run(prefix: str, n: int, batch_size: int, log_dir: Path, timeout_s: float,
                  redis_pid: int | None, switch_interval: float | None = None,
                  engine: str = "confluent") -> tuple[float, float]:
    """Start the processor, wait until it has seen ``n`` records; (first-to-last s, total s).

    Also prints where the time went between the first and the last record: the processor's CPU
    (all its threads), Redis' CPU, and the share of wall time spent inside apply_batch (decode,
    schema check, Lua write-if-newer round trip) vs the rest (faust, aiokafka, the event loop).
    """
    proc = Processor(prefix, batch_size, log_dir, switch_interval, engine)
    first_t = None
    first_count = 0
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            seen = proc.records_seen(GROUP)
            now = time.perf_counter()
            if seen and first_t is None:
                first_t, first_count = now, seen
                pids = proc.pids()
                cpu0, rcpu0, (apply0, batches0) = [process_cpu(p) for p in pids], _cpu(redis_pid), proc.batch_stats()
                threads0 = thread_cpu(proc.proc.pid)
            if seen is not None and seen >= n:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"processor: {seen} of {n} records in {timeout_s:.0f} s; see {proc.log_path}")
            time.sleep(0.1)  # the processor serves each /metrics poll: poll gently (py-spy: 20 ms cost it 8%)
        if first_t is None or n <= first_count:
            return 0.0, now - proc.started
        wall = now - first_t
        cpu, rcpu, (apply_s, batches) = [process_cpu(p) for p in pids], _cpu(redis_pid), proc.batch_stats()
        threads = thread_cpu(proc.proc.pid)
        done = n - first_count
        busiest = sorted(((v - threads0.get(k, 0.0), k) for k, v in threads.items()), reverse=True)[:3]
        used = [c - c0 for c, c0 in zip(cpu, cpu0, strict=True)]
        print(f"    {engine} processor: {sum(used) / wall:.2f} cores busy ({sum(used) / done * 1e6:.0f} CPU-µs/record; "
              f"main process {used[0] / wall:.2f} cores, apply process {sum(used[1:]) / wall:.2f}), "
              f"Redis {(rcpu - rcpu0) / wall:.2f} cores; {batches - batches0} batches of "
              f"~{done / max(1, batches - batches0):.0f} records; inside apply_batch "
              f"{(apply_s - apply0) / wall:.0%} of wall time ({(apply_s - apply0) / done * 1e6:.0f} µs/record); "
              f"CPU by thread: " + ", ".join(f"{name} {secs / done * 1e6:.0f} µs/record" for secs, name in busiest))
        # Rate over the records applied after the first poll that saw any (startup excluded).
        return wall * n / done, now - proc.started
    finally:
        proc.stop()


def _cpu(pid: int | None) -> float:
    return process_cpu(pid) if pid else 0.0


def throughput(config: Config, args: argparse.Namespace, redis_client: Any, log_dir: Path) -> dict[str, float]:
    n = args.records
    rows = [customer(i, second=i % 3600) for i in range(n)]
    raw_s: list[float] = []
    proc_s: dict[str, list[float]] = {e: [] for e in args.engines}
    proc_total: dict[str, list[float]] = {e: [] for e in args.engines}
    for run in range(args.runs):
        prefix = f"benchon{os.getpid()}t{run}"
        fs = setup_group(config, prefix, args.partitions)
        try:
            res = fs.ingest(GROUP, rows, progress=False)
            assert res.published == n, res.summary()
            topic = fs.registry.topic_of(GROUP)
            r_first, r_total = raw_baseline(config, topic, n, args.batch_size, redis_client, f"{prefix}raw:x",
                                            args.timeout)
            wipe_keys(redis_client, f"{prefix}raw:*")
            raw_s.append(r_first)
            line = f"  run {run + 1}: raw {n / r_first:,.0f} rec/s ({r_total:.1f} s incl. startup)"
            for engine in args.engines:
                wipe_keys(redis_client, f"{prefix}:*")  # each engine starts from an empty store
                p_first, p_total = processor_run(f"{prefix}", n, args.batch_size, log_dir, args.timeout,
                                                 service_pid(config, "redis"), args.switch_interval, engine)
                # Spot check: the processor's state is the published records.
                for i in random.Random(run).sample(range(n), 20):
                    got = fs.get_record(GROUP, f"c{i}")
                    if got is None or got["visits"] != i:
                        raise RuntimeError(f"{engine} processor state is wrong for c{i}: {got}")
                proc_s[engine].append(p_first)
                proc_total[engine].append(p_total)
                line += f"  {engine} {n / p_first:,.0f} rec/s ({p_total:.1f} s incl. startup)"
                _delete_consumer_group(config, f"{prefix}-online")  # the next engine reads from the start
            print(line)
        finally:
            teardown(fs, redis_client, prefix)
    raw = n / median(raw_s)
    out = {"raw": raw}
    for engine in args.engines:
        ours = n / median(proc_s[engine])
        out[engine] = ours
        print(f"RESULT (a) throughput  {engine} processor {ours:>9,.0f} records/s   raw consumer+HSET {raw:>9,.0f} "
              f"records/s   ratio {ours / raw:.2f}  (goal >= 0.6, issue 18: {'met' if ours / raw >= 0.6 else 'missed'}); "
              f"incl. startup {n / median(proc_total[engine]):,.0f} records/s")
    return out


def _delete_consumer_group(config: Config, group_id: str) -> None:
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": config.kafka_bootstrap})
    deadline = time.monotonic() + 30
    while True:
        try:
            admin.delete_consumer_groups([group_id], request_timeout=10)[group_id].result(timeout=15)
            return
        except Exception as exc:  # the group is still emptying after the processor left: retry
            if "GROUP_ID_NOT_FOUND" in str(exc) or time.monotonic() > deadline:
                return
            time.sleep(0.5)


# -- (b) freshness and (d) memory ----------------------------------------------------------------

def freshness(config: Config, args: argparse.Namespace, redis_client: Any, log_dir: Path, engine: str,
              with_reads: bool) -> None:
    prefix = f"benchon{os.getpid()}f{engine}"
    fs = setup_group(config, prefix, args.partitions)
    proc = Processor(prefix, args.batch_size, log_dir, args.switch_interval, engine)
    try:
        wait_serving(fs, proc, args.timeout)
        print(f"  processor serving after {time.perf_counter() - proc.started:.1f} s; steady load starts",
              flush=True)
        ids = 10_000
        group = fs.describe_feature_group(GROUP)
        warm_up(fs, proc, group, args, ids, redis_client)
        # 2031-01-01T00:01:00Z: newer than the readiness record and the warm-up load
        run = steady_load(fs, proc, group, args.rate, args.steady_seconds, 1_924_992_060 * 10**9, ids, redis_client)
        total, elapsed, lat, lost, rss = run.total, run.elapsed, run.latencies, run.lost, run.rss
        rss_start = rss[0]
        p50, p99 = percentile(lat, 50), percentile(lat, 99)
        print(f"RESULT (b) freshness   {engine}: publish-to-readable at {total / elapsed:,.0f} records/s for {elapsed:.0f} s: "
              f"p50 {p50:.1f} ms  p99 {p99:.1f} ms  max {lat[-1] if lat else float('nan'):.1f} ms over {len(lat):,} "
              f"samples{f', {lost} not readable within 10 s' if lost else ''} (goal p99 <= 100 ms: "
              f"{'met' if p99 <= 100 else 'missed'})")
        print(f"           (b) {run.cpu_split()}; {run.generator_gc_line()}")
        if run.acked:
            print(f"           (b) of which publish to acknowledged by the broker: p50 {percentile(run.acked, 50):.1f} ms  "
                  f"p99 {percentile(run.acked, 99):.1f} ms")
        print(f"RESULT (d) memory      {engine} processor RSS {rss_start:.0f} MiB at start of the steady load, "
              f"{rss[-1]:.0f} MiB after {elapsed:.0f} s at {args.rate:,}/s, peak {max(rss):.0f} MiB")
        proc.stop()  # reads are measured without the processor's catch-up competing for the CPU
        if with_reads:
            reads(fs, redis_client, prefix, ids, args.reads)
    finally:
        proc.stop()
        teardown(fs, redis_client, prefix)


def warm_up(fs: FeatureStore, proc: Processor, group: Any, args: argparse.Namespace, ids: int,
            redis_client: Any) -> None:
    """A steady load of ``--warmup-seconds`` at ``--rate`` before the one measured, not counted.

    Each run publishes to a topic created moments before, into a broker that may have just started.
    The first seconds of such a load stall more than the rest (2026-12-03: warm-up p99 388 ms and
    publish-to-acknowledged p99 169 ms on a broker started minutes before, against 24-56 ms and
    6-18 ms in later warm-ups), which measures a JVM's and a new topic's start, not a steady rate.
    Event times 2031-01-01T00:00:10Z on: after the readiness record, before the measured load."""
    if args.warmup_seconds <= 0:
        return
    run = steady_load(fs, proc, group, args.rate, args.warmup_seconds, 1_924_992_010 * 10**9, ids, redis_client)
    print(f"  warm-up (not counted): {args.warmup_seconds:.0f} s at {run.total / run.elapsed:,.0f}/s, "
          f"p99 {percentile(run.latencies, 99):.1f} ms, publish to acknowledged p99 "
          f"{percentile(run.acked, 99) if run.acked else float('nan'):.1f} ms", flush=True)


def wait_serving(fs: FeatureStore, proc: Processor, timeout_s: float) -> None:
    """Wait until the processor serves the group: a read-after-write put proves it."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            fs.put_record(GROUP, customer(0, second=1), wait_online=True, wait_timeout_s=5)
            return
        except Exception as exc:
            if time.monotonic() > deadline:
                raise
            if proc.proc.poll() is not None:
                raise RuntimeError(f"processor exited; see {proc.log_path}") from None
            print(f"  (waiting for the processor: {exc})", flush=True)


@dataclass
class SteadyRun:
    """One steady load: records published, seconds it took, sorted latencies (ms), samples not
    readable within 10 s, and the processor's RSS (MiB) sampled each second."""

    total: int
    elapsed: float
    latencies: list[float]
    lost: int
    rss: list[float]
    cores: dict[str, float]  # cores busy during the load, per process (from /proc; Redis from INFO)
    acked: list[float]  # sorted publish-to-acknowledged latencies (ms) of the samples (see rate_search)
    generator_gc: list[float]  # the load generator's own full (generation-2) GC passes during the load, ms

    def cpu_split(self) -> str:
        parts = ", ".join(f"{name} {v:.2f}" for name, v in self.cores.items())
        return f"cores busy: {parts}; {sum(self.cores.values()):.2f} of {os.cpu_count()}"

    def generator_gc_line(self) -> str:
        worst = f", longest {max(self.generator_gc):.0f} ms" if self.generator_gc else ""
        return f"the load generator's own full GC passes during the load: {len(self.generator_gc)}{worst}"


class FullGcPauses:
    """Times this process's generation-2 garbage-collector passes while active.

    The load generator and the latency reader share one process, so a full pass there stalls
    the reader and the publisher and shows as latency of the system under test. Measured
    2026-12-03 before the heap was frozen: 13 full passes in one 20 s load at 5,000/s, the
    longest 326 ms, which was the "periodic stall" behind the 263-398 ms maxima."""

    def __init__(self) -> None:
        self.pauses: list[float] = []
        self._started = 0.0

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if info["generation"] != 2:
            return
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.pauses.append((time.perf_counter() - self._started) * 1000)

    def start(self) -> FullGcPauses:
        gc.callbacks.append(self._callback)
        return self

    def stop(self) -> None:
        gc.callbacks.remove(self._callback)


def steady_load(fs: FeatureStore, proc: Processor | None, group: Any, rate: int, seconds: float, event_base_ns: int,
                ids: int, redis_client: Any) -> SteadyRun:
    """Publish ``rate`` records/s for ``seconds`` (event times from ``event_base_ns`` up, so each
    load is newer than the one before) and measure publish-to-readable latency. With ``proc`` None
    no processor runs and nothing is read: the broker alone, publish to acknowledged."""
    validator = compile_validator(group)
    topic = fs.registry.topic_of(GROUP)
    publish = fs.publisher.publish
    total = int(rate * seconds)
    # ~200 latency samples a second, polled every 2 ms at most: the reader shares the 2 cores
    # with the processor, and polling flat out would slow what it measures.
    sample_every = max(1, rate // 200)
    pending: deque[tuple[str, int]] = deque()
    latencies: list[float] = []
    stop = threading.Event()
    lock = threading.Lock()

    def reader() -> None:
        while not stop.is_set() or pending:
            with lock:
                todo = list(pending)[:100]
            if not todo:
                time.sleep(0.001)
                continue
            polled = time.monotonic()
            # The store's BatchGetRecord with the group already resolved (see the publish
            # side): one Redis round trip per poll, so the poll period stays ~1 ms.
            got = fs.online.batch_get([(group, [i for i, _ in todo], ["visits"])])
            now = time.time_ns()
            done = set()
            for rid, sent in todo:
                rec = got.record(GROUP, rid)
                if rec is not None and rec.get("visits", -1) >= sent:
                    latencies.append((now - sent) / 1e6)
                    done.add((rid, sent))
                elif now - sent > 10e9:
                    done.add((rid, sent))  # counted as lost below
            with lock:
                kept = [p for p in pending if p not in done]
                pending.clear()
                pending.extend(kept)
            if stop.is_set() and time.monotonic() > stop_deadline[0]:
                return
            time.sleep(max(0.0, polled + 0.002 - time.monotonic()))

    # Records are validated and encoded before the clock starts, with a placeholder where
    # the send time goes: validating and encoding 5,000 records/s in Python took 0.8 of the
    # machine's 2 cores away from the processor being measured (sampled from /proc).
    encoded = []
    for k in range(total):
        rec = customer(k % ids)
        rec["event_time"] = format_iso(event_base_ns + k * 10**9 // rate)  # strictly increasing
        rec["visits"] = int(_SENT_PLACEHOLDER)
        encoded.append(encode(validator.validate(rec, api_invocation_time_ns=int(_SENT_PLACEHOLDER))))
        if _SENT_PLACEHOLDER not in encoded[-1][1]:
            raise AssertionError("the placeholder did not survive encoding")
    # The pre-encoded records (and everything else alive now) leave the collector's sight for the
    # load, as the processor's do after start-up (streams.gc_tuning): otherwise the generator's
    # own full GC passes over them stall its reader and publisher (FullGcPauses).
    gc.collect()
    gc.freeze()
    stop_deadline = [float("inf")]
    thread = threading.Thread(target=reader, daemon=True)
    if proc is not None:
        thread.start()
    rss = [proc.rss_mb()] if proc is not None else []
    # Where the 2 cores go during the load: the processor, the broker, Redis, and this process (the
    # load generator and the reader). A rate the machine cannot carry shows as a total near 2.
    pids = {"processor": proc.pids()} if proc is not None else {}
    pids |= {"Kafka": [p for p in [service_pid(fs.config, "kafka")] if p], "load generator + reader": [os.getpid()]}

    def cpu_now() -> dict[str, float]:
        now = {name: sum(process_cpu(p) for p in ps) for name, ps in pids.items()}
        info = redis_client.info("cpu")
        now["Redis"] = info["used_cpu_user"] + info["used_cpu_sys"]
        return now

    cpu0 = cpu_now()
    acked: list[float] = []
    # Delivery is counted in callbacks rather than by keeping every Future: 100k Futures alive to
    # the end of a load were what the generator's full GC passes walked (FullGcPauses).
    delivered = [0]
    failed: list[BaseException] = []

    def count(f: Any) -> None:
        if f.exception() is not None:
            failed.append(f.exception())
        with lock:  # the publisher reports deliveries on more than one thread
            delivered[0] += 1

    sampled = 0
    gc_pauses = FullGcPauses().start()
    t0 = time.perf_counter()
    give_up = t0 + seconds * 1.5 + 5  # bounded even if we cannot keep the rate
    next_rss = t0 + 1.0
    for k in range(total):
        due = t0 + k / rate
        now = time.perf_counter()
        if due > now:
            # Sleep to the next whole millisecond and send what is due by then: one wake-up
            # per millisecond rather than per record keeps the generator's CPU down.
            time.sleep(max(due - now, 0.001))
        elif now > give_up:
            print(f"  (could only publish {k:,} of {total:,} records in time)")
            total = k
            break
        if now > next_rss and proc is not None:
            rss.append(proc.rss_mb())
            next_rss += 1.0
        key, value, headers = encoded[k]
        sent = time.time_ns()
        stamp = str(sent).encode()
        # The send time goes into the pre-encoded message: same length as the placeholder.
        future = publish(topic, key, value.replace(_SENT_PLACEHOLDER, stamp),
                         [(n, stamp if v == _SENT_PLACEHOLDER else v) for n, v in headers])
        future.add_done_callback(count)
        if k % sample_every == 0:
            if proc is not None:
                sampled += 1
                with lock:
                    pending.append((f"c{k % ids}", sent))
            # publish to acknowledged (delivery report seen); see rate_search on what it includes
            future.add_done_callback(lambda _f, sent=sent: acked.append((time.time_ns() - sent) / 1e6))
    elapsed = time.perf_counter() - t0
    cpu1 = cpu_now()
    fs.publisher.flush(60)
    reported_by = time.monotonic() + 10  # the poller thread may still be running the last callbacks
    while delivered[0] < total and time.monotonic() < reported_by:
        time.sleep(0.01)
    if failed or delivered[0] != total:
        raise RuntimeError(f"{len(failed)} of {total:,} records failed and {total - delivered[0]:,} were not "
                           f"reported; first error: {failed[0] if failed else None}")
    stop_deadline[0] = time.monotonic() + 15
    stop.set()
    if proc is not None:
        thread.join(timeout=20)
        rss.append(proc.rss_mb())
    gc_pauses.stop()
    gc.unfreeze()
    lat = sorted(latencies)
    # samples taken (not total // sample_every: one more when sample_every does not divide total,
    # which made every rate but a few "lose" -1 samples and fail the search)
    return SteadyRun(total, elapsed, lat, sampled - len(lat), rss,
                     {name: (cpu1[name] - cpu0[name]) / elapsed for name in cpu0}, sorted(acked), gc_pauses.pauses)


# -- (b2) the highest steady rate with p99 <= 100 ms -------------------------------------------

def rate_search(config: Config, args: argparse.Namespace, redis_client: Any, log_dir: Path, engine: str) -> None:
    """Steady loads of ``--search-seconds`` each against one processor: double the rate from
    ``--rate`` while p99 <= 100 ms, then bisect between the last rate that held and the first that
    did not. A rate holds when p99 <= 100 ms, every sample was readable, and the generator kept
    at least 95% of the rate (otherwise the bound is the generator, and that is printed)."""
    prefix = f"benchon{os.getpid()}s{engine}"
    fs = setup_group(config, prefix, args.partitions)
    proc = Processor(prefix, args.batch_size, log_dir, args.switch_interval, engine)
    try:
        wait_serving(fs, proc, args.timeout)
        group = fs.describe_feature_group(GROUP)
        warm_up(fs, proc, group, args, 10_000, redis_client)
        base = 1_924_992_060 * 10**9
        steps: list[str] = []
        good, bad = 0, 0

        def holds(rate: int) -> bool:
            nonlocal base
            run = steady_load(fs, proc, group, rate, args.search_seconds, base, 10_000, redis_client)
            base += (int(args.search_seconds) + 10) * 10**9  # the next load's event times are newer
            achieved = run.total / run.elapsed
            p99 = percentile(run.latencies, 99)
            ok = p99 <= 100 and run.lost == 0 and achieved >= 0.95 * rate
            why = "" if ok else (" (generator fell behind)" if achieved < 0.95 * rate else "")
            # A sample cannot be read before the broker has appended it, and with acks=all on one
            # replica its acknowledgement follows the append. Measured beside the processor, this is
            # not the broker's own latency: it includes waiting for the cores the processor uses
            # (broker_alone() measures it without).
            acked99 = percentile(run.acked, 99)
            steps.append(f"{rate:,}/s: p99 {p99:.0f} ms at {achieved:,.0f}/s{why} {'held' if ok else 'failed'} "
                         f"(publish to acknowledged p99 {acked99:.0f} ms)")
            print(f"  search {engine}: {steps[-1]}; {run.cpu_split()}; {load_average()}", flush=True)
            return ok

        rate = args.rate
        while rate <= args.search_max:
            if not holds(rate):
                bad = rate
                break
            good = rate
            rate *= 2
        for _ in range(args.search_bisections if bad else 0):
            mid = (good + bad) // 2
            if bad - good <= max(500, good // 20):
                break
            if holds(mid):
                good = mid
            else:
                bad = mid
        verdict = "met" if good >= 10_000 else "missed"
        if bad:
            proc.stop()  # stopped again (a no-op) in the finally below
            broker_alone(fs, group, args, sorted({bad, 10_000}), base, redis_client, engine)
        print(f"RESULT (b2) rate search {engine}: highest steady rate with p99 <= 100 ms: {good:,}/s "
              f"(first failing: {f'{bad:,}/s' if bad else f'none up to {args.search_max:,}/s'}; "
              f"{args.search_seconds:.0f} s per step; goal >= 10,000/s: {verdict}); {load_average()}")
    finally:
        proc.stop()
        teardown(fs, redis_client, prefix)


def broker_alone(fs: FeatureStore, group: Any, args: argparse.Namespace, rates: list[int],
                 base: int, redis_client: Any, engine: str) -> None:
    """The same loads with no processor running and no reader: publish-to-acknowledged is then the
    broker's (and the generator's client's) latency alone, a floor under publish-to-readable."""
    for rate in rates:
        run = steady_load(fs, None, group, rate, args.search_seconds, base, 10_000, redis_client)
        base += (int(args.search_seconds) + 10) * 10**9
        print(f"  search {engine}: broker alone (no processor, no reader) at {rate:,}/s: publish to acknowledged "
              f"p99 {percentile(run.acked, 99):.0f} ms (p50 {percentile(run.acked, 50):.0f} ms) at "
              f"{run.total / run.elapsed:,.0f}/s; {run.cpu_split()}; {load_average()}", flush=True)


# -- (c) reads -----------------------------------------------------------------------------------

def reads(fs: FeatureStore, redis_client: Any, prefix: str, ids: int, n: int) -> None:
    """get_record vs HGETALL on the same keys, interleaved in blocks; medians of 3 rounds.

    Two of our paths: the SDK's FeatureStore.get_record (resolves the group in the registry on
    every call) and OnlineStore.get_record with the group resolved once (the Redis read and the
    decoding alone).
    """
    group = fs.describe_feature_group(GROUP)
    keys = [f"c{i}" for i in random.Random(7).choices(range(ids), k=n)]
    redis_keys = [online_key(prefix, GROUP, k) for k in keys]
    paths = {
        "FeatureStore.get_record": lambda k, _rk: fs.get_record(GROUP, k),
        "OnlineStore.get_record": lambda k, _rk: fs.online.get_record(group, k),
        "raw HGETALL": lambda _k, rk: redis_client.hgetall(rk),
    }
    for call in paths.values():
        call(keys[0], redis_keys[0])  # warm: registry view, connection
    p50s: dict[str, list[float]] = {name: [] for name in paths}
    p99s: dict[str, list[float]] = {name: [] for name in paths}
    perf = time.perf_counter_ns
    for _round in range(3):
        lat: dict[str, list[int]] = {name: [] for name in paths}
        for start in range(0, n, 500):
            block = list(zip(keys[start:start + 500], redis_keys[start:start + 500], strict=True))
            for name, call in paths.items():
                out = lat[name]
                for k, rk in block:
                    t = perf()
                    call(k, rk)
                    out.append(perf() - t)
        for name, values in lat.items():
            values.sort()
            p50s[name].append(percentile(values, 50) / 1e3)
            p99s[name].append(percentile(values, 99) / 1e3)
    r50, r99 = median(p50s["raw HGETALL"]), median(p99s["raw HGETALL"])
    for name in ("FeatureStore.get_record", "OnlineStore.get_record"):
        o50, o99 = median(p50s[name]), median(p99s[name])
        ok = o99 / r99 <= 2 and o50 / r50 <= 2 and o99 < 1000
        print(f"RESULT (c) reads       {name:24s} p50 {o50:6.0f} µs p99 {o99:6.0f} µs   raw HGETALL p50 {r50:.0f} µs "
              f"p99 {r99:.0f} µs   ratio p50 {o50 / r50:.2f} p99 {o99 / r99:.2f}  ({n:,} reads x 3 rounds; goal "
              f"ratio <= 2 and p99 < 1 ms: {'met' if ok else 'missed'})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=200_000, help="records for the throughput phase")
    parser.add_argument("--runs", type=int, default=3, help="throughput runs (median)")
    parser.add_argument("--batch-size", type=int, default=1000, help="processor --batch-size and raw batch")
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--rate", type=int, default=5000, help="steady publish rate for freshness/memory")
    parser.add_argument("--steady-seconds", type=float, default=60.0, help="duration of the steady load")
    parser.add_argument("--warmup-seconds", type=float, default=5.0,
                        help="(b, b2) a steady load at --rate before the measured ones, not counted (0-40 s): the "
                             "first seconds on a new topic and a fresh broker stall more than a steady rate does")
    parser.add_argument("--reads", type=int, default=20_000, help="get_record/HGETALL calls per round")
    parser.add_argument("--timeout", type=float, default=300.0, help="bound on any one phase, seconds")
    parser.add_argument("--switch-interval", type=float, default=None,
                        help="experiment: run the processor with sys.setswitchinterval(S) (default: Python's 5 ms)")
    parser.add_argument("--engines", default="confluent,faust",
                        help="processor engines to measure side by side (comma-separated; default both)")
    parser.add_argument("--only", choices=["throughput", "freshness", "search"],
                        help="run one phase ((c)/(d) ride on freshness; search is (b2), the rate search)")
    parser.add_argument("--search-seconds", type=float, default=15.0, help="(b2) duration of each steady step")
    parser.add_argument("--search-max", type=int, default=40_000, help="(b2) highest rate tried")
    parser.add_argument("--search-bisections", type=int, default=2, help="(b2) bisection steps after doubling")
    args = parser.parse_args(argv)
    args.engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    if not args.engines or set(args.engines) - {"confluent", "faust"}:
        parser.error("--engines takes confluent and/or faust")
    if not 0 <= args.warmup_seconds <= 40:
        parser.error("--warmup-seconds must be 0 to 40 (its event times fit before the measured load's)")
    if min(args.records, args.runs, args.batch_size, args.rate, args.reads) < 1 or args.steady_seconds <= 0:
        parser.error("counts, rates and durations must be positive")

    import redis

    # `timeout` and friends send SIGTERM: exit through the finally blocks, which stop the
    # processor subprocess and delete the bench groups and keys.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    config = Config.from_env()
    redis_client = redis.Redis.from_url(config.require("redis_url"))
    config.require("kafka_bootstrap")
    print(f"online benchmark: {args.records:,} records x {args.runs} runs, batch {args.batch_size}, "
          f"{args.partitions} partitions; steady {args.rate:,}/s for {args.steady_seconds:.0f} s; {load_average()}")
    with tempfile.TemporaryDirectory(prefix="fs-bench-online-") as tmp:
        try:
            if args.only in (None, "throughput"):
                throughput(config, args, redis_client, Path(tmp))
            if args.only in (None, "freshness"):
                for k, engine in enumerate(args.engines):
                    freshness(config, args, redis_client, Path(tmp), engine, with_reads=k == 0)
            if args.only in (None, "search"):
                for engine in args.engines:
                    rate_search(config, args, redis_client, Path(tmp), engine)
        except BaseException:
            for log in Path(tmp).glob("*.log"):  # the processor's own words, before they are deleted
                print(f"--- {log.name} (last lines)\n" + "\n".join(log.read_text().splitlines()[-20:]))
            raise
    print(f"after: {load_average()}")
    redis_client.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
