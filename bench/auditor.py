"""Benchmark: the parity auditor (`featurestream auditor`, issue 20), at its default settings.

The bench group is online-only (as in bench/online.py): the offline check of each pass (which reads
every table's three Kafka-position columns) is not part of these figures.

  (a) cost        --records records are published to a fresh group; `featurestream process` (a
                  subprocess, fresh consumer group; bench/online.py's Processor) applies them, once
                  with an auditor running on the same topic prefix and once without (two prefixes,
                  same records; the order alternates between runs). The auditor's first pass runs
                  on the empty topic (start-up and connections out of the way); the records are
                  published after it, and the processor is started so that the auditor's next pass,
                  which folds those records, falls inside the processor's run: in steady state
                  the auditor reads every record the processor applies, once per interval. Rates
                  are first-record-to-last, read off the processor's counter; the effect is
                  1 - with/without (goal <= 5%). The auditor's CPU is read from /proc between its
                  passes (it is idle then), its checked ids from featurestream_parity_checked_total:
                  CPU-µs per audited id (the issue's figure: CPU over two passes / ids checked),
                  split into the fold (per topic record read) and the sampling pass (per id checked,
                  from a pass with nothing new to fold), and the cores it would use at the
                  processor's measured rate.
  (b) loss        a group of --ids ids, a processor and an auditor running; then, per loss shape and
                  trial, fresh writes are published and applied, and some of the just-applied keys are
                  deleted from Redis behind the processor's back (as the tests do; the epoch marker
                  stays, as after a failover to a replica that missed the last writes). Timed from the
                  DEL: detection (featurestream_parity_mismatch_total{store="online"} moves) and repair
                  (every lost id reads back as the topic's latest). Goal <= 60 s each. Shapes:
                    quiet      20 ids written, 8 lost: the recent writes fit in the half of the sample
                               the auditor gives to recent ids (judged in flight, or changed and not
                               judged since);
                    busy       --busy-writes ids written, 8 lost: --sample/2 recent ids are checked per
                               pass (in-flight retries first, then the newest changes, then random ones),
                               and an id stays recent until it gets a real verdict;
                    busy-big   --busy-writes ids written, half of them lost: more than the auditor's
                               --heal-group-above (20) mismatches in one pass replay the group.
                  Each trial starts at a uniformly random point of the auditor's interval (seeded). A
                  trial not repaired within --max-wait is reported as such (with the expected time
                  for the uniform sample alone) and its ids are restored by publishing newer versions.

Everything is bounded in count and time and talks to loopback endpoints from Config.from_env():

  eval "$(.venv/bin/featurestream up)"
  export FEATURESTREAM_STATE_DIR=...   # as for bench/online.py
  .venv/bin/python bench/auditor.py [--records 200000] [--runs 3] [--ids 10000] [--loss-runs 3] [--only cost|loss]

--interval-s and --sample are the auditor's defaults (30 s, 100 ids); change them only for a quick check
(every RESULT line says which settings it ran at).
"""

# ruff: noqa: E402  (the sys.path fix below must run before the imports)
from __future__ import annotations

import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:] = [str(_HERE.parent)] + [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import argparse
import os
import random
import signal
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from bench._common import customer, load_average, median, process_cpu
from bench.online import GROUP, Processor, free_port, setup_group, teardown
from featurestream.config import ENV_TOPIC_PREFIX, Config
from featurestream.sdk import FeatureStore
from schemas.eventtime import format_iso
from schemas.names import online_key
from sinks.online.store import MAX_IDS_PER_GROUP
from tests.integration.procs import child_pids, terminate

DEFAULT_INTERVAL_S = 30.0   # `featurestream auditor`'s defaults (featurestream/cli/audit_cmds.py)
DEFAULT_SAMPLE = 100
HEAL_GROUP_ABOVE = 20
GOAL_S = 60.0


# -- the auditor subprocess ----------------------------------------------------------------------

class AuditorProc:
    """`featurestream auditor` in a subprocess with its own topic prefix; read through its /metrics."""

    def __init__(self, prefix: str, log_dir: Path, interval_s: float, sample: int) -> None:
        self.port = free_port()
        self.interval_s = interval_s
        self.log_path = log_dir / f"auditor-{prefix}.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "featurestream.cli", "auditor", "--metrics-port", str(self.port),
             "--interval-s", str(interval_s), "--sample", str(sample), "--log-level", "warning"],
            env={**os.environ, ENV_TOPIC_PREFIX: prefix}, stdout=self._log, stderr=subprocess.STDOUT,
            cwd=str(_HERE.parent))

    def samples(self) -> list[Any] | None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"the auditor exited with status {self.proc.returncode}; see {self.log_path}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=2) as resp:
                text = resp.read().decode()
        except OSError:
            return None
        return [s for fam in text_string_to_metric_families(text) for s in fam.samples]

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples of ``name`` whose labels include ``labels`` (0 before /metrics answers)."""
        return sum(s.value for s in self.samples() or () if s.name == name
                   and all(s.labels.get(k) == v for k, v in labels.items()))

    def passes(self) -> int:
        """Audit passes finished, whatever their outcome."""
        return int(self.metric("featurestream_parity_audits_total"))

    def last_end(self) -> float:
        """Unix time its last good pass ended."""
        return self.metric("featurestream_parity_last_audit_timestamp_seconds")

    def wait_passes(self, k: int, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while self.passes() < k:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the auditor did not finish {k} pass(es) in {timeout_s:.0f} s; see {self.log_path}")
            time.sleep(0.2)
        failed = self.metric("featurestream_parity_audits_total", outcome="failed")
        if failed:
            raise RuntimeError(f"{failed:.0f} audit pass(es) failed; see {self.log_path}")

    def cpu(self) -> float:
        """CPU seconds of the auditor (and any child)."""
        return sum(process_cpu(p) for p in [self.proc.pid, *child_pids(self.proc.pid)])

    def stop(self) -> None:
        terminate(self.proc, grace_s=20)
        self._log.close()


def wait_until(what: str, done: Callable[[], bool], timeout_s: float, step_s: float = 0.1) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(step_s)


# -- (a) cost ------------------------------------------------------------------------------------

@dataclass
class Run:
    rate: float             # processor records/s, first record to last
    startup_s: float        # processor start to its first record
    proc_us: float          # processor CPU-µs/record over the window
    auditor_cores: float    # auditor CPU during the window / window


def processor_window(prefix: str, n: int, args: argparse.Namespace, log_dir: Path,
                     auditor: AuditorProc | None) -> Run:
    """bench/online.py's Processor on ``prefix`` until it has seen ``n`` records (polled gently:
    the processor serves each /metrics poll)."""
    proc = Processor(prefix, args.batch_size, log_dir)
    first_t = None
    first_count = 0
    deadline = time.monotonic() + args.timeout
    try:
        while True:
            seen = proc.records_seen(GROUP)
            now = time.perf_counter()
            if seen and first_t is None:
                first_t, first_count = now, seen
                pcpu0 = sum(process_cpu(p) for p in proc.pids())
                acpu0 = auditor.cpu() if auditor else 0.0
            if seen is not None and seen >= n:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"processor: {seen} of {n} records in {args.timeout:.0f} s; see {proc.log_path}")
            time.sleep(0.1)
        if first_t is None or n <= first_count:
            raise RuntimeError("the processor applied every record before its first poll: raise --records")
        wall = now - first_t
        done = n - first_count
        pcpu = sum(process_cpu(p) for p in proc.pids()) - pcpu0
        acpu = (auditor.cpu() - acpu0) if auditor else 0.0
        return Run(done / wall, first_t - proc.started, pcpu / done * 1e6, acpu / wall)
    finally:
        proc.stop()


def cost(config: Config, args: argparse.Namespace, redis_client: Any, log_dir: Path) -> None:
    n = args.records
    rows = [customer(i, second=i % 3600) for i in range(n)]
    rates: dict[str, list[float]] = {"without": [], "with": []}
    fold_us: list[float] = []
    sample_us: list[float] = []
    overall_us: list[float] = []
    sample_pass_cpu: list[float] = []
    startup = 2.0  # processor start to first record, refined by every run
    for run in range(args.runs):
        order = ("without", "with") if run % 2 == 0 else ("with", "without")
        line = f"  run {run + 1}:"
        for mode in order:
            prefix = f"benchaud{os.getpid()}r{run}{mode}"
            fs = setup_group(config, prefix, args.partitions)
            auditor = None
            try:
                if mode == "with":
                    auditor = AuditorProc(prefix, log_dir, args.interval_s, args.sample)
                    auditor.wait_passes(1, args.timeout)   # on the empty topic: start-up done
                    time.sleep(0.5)
                    cpu1, checked1 = auditor.cpu(), auditor.metric("featurestream_parity_checked_total")
                res = fs.ingest(GROUP, rows, progress=False)
                assert res.published == n, res.summary()
                if auditor is not None:
                    # The next pass starts interval_s after the first one started (a pass on an empty
                    # topic takes well under a second): start the processor so that its first record
                    # comes ~0.5 s before that pass begins folding the same records.
                    next_pass = auditor.last_end() + args.interval_s
                    wait = next_pass - time.time() - startup - 0.5
                    if wait < 0:
                        print(f"    (publishing took past the auditor's next pass by {-wait:.1f} s: raise "
                              f"--interval-s or lower --records; this run's overlap is partial)")
                    time.sleep(max(0.0, wait))
                r = processor_window(prefix, n, args, log_dir, auditor)
                startup = r.startup_s
                rates[mode].append(r.rate)
                line += f" {mode} {r.rate:,.0f} rec/s ({r.proc_us:.0f} processor CPU-µs/record)"
                if auditor is not None:
                    auditor.wait_passes(2, args.timeout)
                    time.sleep(0.5)
                    cpu2, checked2 = auditor.cpu(), auditor.metric("featurestream_parity_checked_total")
                    auditor.wait_passes(3, args.interval_s + args.timeout)  # nothing new to fold
                    time.sleep(0.5)
                    cpu3, checked3 = auditor.cpu(), auditor.metric("featurestream_parity_checked_total")
                    pass3 = cpu3 - cpu2
                    fold = max(0.0, cpu2 - cpu1 - pass3)
                    fold_us.append(fold / n * 1e6)
                    sample_us.append(pass3 / max(1.0, checked3 - checked2) * 1e6)
                    overall_us.append((cpu3 - cpu1) / max(1.0, checked3 - checked1) * 1e6)
                    sample_pass_cpu.append(pass3)
                    line += (f" [auditor {r.auditor_cores:.2f} cores during the window; fold {fold_us[-1]:.1f} "
                             f"CPU-µs/topic record; sampling pass {pass3 * 1e3:.0f} ms CPU for "
                             f"{checked3 - checked2:.0f} ids]")
            finally:
                if auditor is not None:
                    auditor.stop()
                teardown(fs, redis_client, prefix)
        print(line + f"; {load_average()}", flush=True)
    without, with_ = median(rates["without"]), median(rates["with"])
    effect = 1 - with_ / without
    settings = _settings(args)
    print(f"RESULT (a) throughput  processor with the auditor {with_:,.0f} records/s, without {without:,.0f} records/s "
          f"(medians of {args.runs} x {n:,}), ratio {with_ / without:.3f}: effect {effect:+.1%} (goal <= 5%: "
          f"{'met' if effect <= 0.05 else 'missed'}); {settings}; {load_average()}")
    fold, per_id, overall = median(fold_us), median(sample_us), median(overall_us)
    pass_cpu = median(sample_pass_cpu)
    print(f"RESULT (a) cost        auditor {overall:,.0f} CPU-µs per audited id (CPU of two passes / ids checked; "
          f"dominated by reading the topic): fold {fold:.1f} CPU-µs per topic record, sampling pass "
          f"{pass_cpu * 1e3:.0f} ms CPU = {per_id:,.0f} CPU-µs per id checked (per-pass fixed costs included); at the "
          f"processor's rate ({without:,.0f}/s) it would use {without * fold / 1e6 + pass_cpu / args.interval_s:.2f} "
          f"cores; {settings}; {load_average()}")


def _settings(args: argparse.Namespace) -> str:
    default = args.interval_s == DEFAULT_INTERVAL_S and args.sample == DEFAULT_SAMPLE
    return (f"auditor --interval-s {args.interval_s:g} --sample {args.sample} "
            f"({'the defaults' if default else 'NOT the defaults'})")


# -- (b) loss to detection and repair ------------------------------------------------------------

def read_visits(fs: FeatureStore, group: Any, ids: list[str]) -> dict[str, int | None]:
    out: dict[str, int | None] = {}
    for i in range(0, len(ids), MAX_IDS_PER_GROUP):
        chunk = ids[i:i + MAX_IDS_PER_GROUP]
        got = fs.online.batch_get([(group, chunk, ["visits"])])
        for rid in chunk:
            rec = got.record(GROUP, rid)
            out[rid] = None if rec is None else rec.get("visits")
    return out


class Writer:
    """Publishes versions with strictly newer event times and a unique ``visits`` serial, and waits
    until the processor has applied them."""

    def __init__(self, fs: FeatureStore, timeout_s: float) -> None:
        self.fs = fs
        self.group = fs.describe_feature_group(GROUP)
        self.timeout_s = timeout_s
        self.serial = 0
        self.base_ns = 1_924_992_060 * 10**9

    def write(self, ids: list[int]) -> dict[str, int]:
        rows, latest = [], {}
        for i in ids:
            self.serial += 1
            rec = customer(i)
            rec["event_time"] = format_iso(self.base_ns + self.serial * 1000)
            rec["visits"] = self.serial
            rows.append(rec)
            latest[rec["customer_id"]] = self.serial
        res = self.fs.ingest(GROUP, rows, progress=False)
        assert res.published == len(rows), res.summary()
        wait_until("the processor to apply the writes", lambda: read_visits(self.fs, self.group, list(latest)) == latest,
                   self.timeout_s, 0.05)
        return latest


@dataclass
class Trial:
    detect_s: float | None
    repair_s: float | None
    still_lost: int
    healed: dict[str, float]
    audited_between: bool   # a pass ended between the first write and the loss
    in_flight: float        # ids the auditor judged in flight (differing, version past the committed offset) meanwhile
    passes: int             # audit passes during the trial


def one_loss(fs: FeatureStore, writer: Writer, auditor: AuditorProc, redis_client: Any, prefix: str, ids: int,
             writes: int, lost: int, rng: random.Random, max_wait_s: float) -> Trial:
    passes0 = auditor.passes()
    latest = writer.write(rng.sample(range(ids), writes))
    victims = list(latest)[-lost:]                 # the most recently published
    want = {rid: latest[rid] for rid in victims}
    mism0 = auditor.metric("featurestream_parity_mismatch_total", store="online", group=GROUP)
    healed0 = {how: auditor.metric("featurestream_parity_healed_total", group=GROUP, how=how) for how in ("key", "group")}
    audited_between = auditor.passes() != passes0
    flight0 = auditor.metric("featurestream_parity_in_flight_total", store="online", group=GROUP)
    passes1 = auditor.passes()
    t0 = time.monotonic()
    deleted = redis_client.delete(*(online_key(prefix, GROUP, rid) for rid in victims))
    if deleted != lost:
        raise RuntimeError(f"deleted {deleted} of {lost} keys: they were not all applied")
    detect = repair = None
    remaining = lost
    while time.monotonic() - t0 < max_wait_s and (detect is None or repair is None):
        now = time.monotonic() - t0
        if detect is None and auditor.metric("featurestream_parity_mismatch_total", store="online", group=GROUP) > mism0:
            detect = now
        if repair is None:
            got = read_visits(fs, writer.group, victims)
            remaining = sum(1 for rid in victims if got[rid] != want[rid])
            if remaining == 0:
                repair = now
        time.sleep(0.25)
    healed = {how: auditor.metric("featurestream_parity_healed_total", group=GROUP, how=how) - v
              for how, v in healed0.items()}
    in_flight = auditor.metric("featurestream_parity_in_flight_total", store="online", group=GROUP) - flight0
    passes = auditor.passes() - passes1
    if remaining:
        # Restore by hand so the next trial starts whole: newer versions of the ids still lost.
        writer.write([int(rid[1:]) for rid, v in read_visits(fs, writer.group, victims).items() if v != want[rid]])
    return Trial(detect, repair, remaining, healed, audited_between, in_flight, passes)


def loss(config: Config, args: argparse.Namespace, redis_client: Any, log_dir: Path) -> None:
    prefix = f"benchaud{os.getpid()}loss"
    fs = setup_group(config, prefix, args.partitions)
    proc = Processor(prefix, args.batch_size, log_dir)
    auditor = AuditorProc(prefix, log_dir, args.interval_s, args.sample)
    rng = random.Random(20)
    try:
        writer = Writer(fs, args.timeout)
        t = time.perf_counter()
        writer.write(list(range(args.ids)))
        print(f"  {args.ids:,} ids published and applied in {time.perf_counter() - t:.1f} s", flush=True)
        auditor.wait_passes(auditor.passes() + 1, args.interval_s + args.timeout)
        shapes = [("quiet", 20, 8), ("busy", args.busy_writes, 8), ("busy-big", args.busy_writes, args.busy_writes // 2)]
        for name, writes, lost in shapes:
            if name not in args.shapes:
                continue
            if writes > args.ids or lost > writes:
                print(f"  (shape {name} skipped: needs {writes} ids written of --ids {args.ids})")
                continue
            trials = []
            for k in range(args.loss_runs):
                # A uniformly random point of the auditor's interval: wait for a pass to end, then a random delay.
                auditor.wait_passes(auditor.passes() + 1, args.interval_s + args.timeout)
                time.sleep(rng.uniform(0, args.interval_s))
                tr = one_loss(fs, writer, auditor, redis_client, prefix, args.ids, writes, lost, rng, args.max_wait)
                trials.append(tr)
                print(f"  {name} trial {k + 1}: detection {_s(tr.detect_s)}, repair {_s(tr.repair_s)}"
                      f"{f', {tr.still_lost} of {lost} still lost' if tr.still_lost else ''}; healed by key "
                      f"{tr.healed['key']:.0f}, by group replay {tr.healed['group']:.0f}; {tr.passes} passes, "
                      f"{tr.in_flight:.0f} ids judged in flight"
                      f"{'; a pass ran between the writes and the loss' if tr.audited_between else ''}; "
                      f"{load_average()}", flush=True)
            _loss_result(name, args, writes, lost, trials)
    finally:
        auditor.stop()
        proc.stop()
        teardown(fs, redis_client, prefix)


def _s(v: float | None) -> str:
    return "never" if v is None else f"{v:.1f} s"


def _loss_result(name: str, args: argparse.Namespace, writes: int, lost: int, trials: list[Trial]) -> None:
    def figure(values: list[float | None]) -> tuple[str, bool]:
        seen = [v for v in values if v is not None]
        missing = len(values) - len(seen)
        text = (f"median {median(seen):.1f} s, max {max(seen):.1f} s" if seen else "none")
        if missing:
            text += f", {missing} of {len(values)} trials not within {args.max_wait:.0f} s"
        return text, not missing and max(seen) <= GOAL_S

    det, det_ok = figure([t.detect_s for t in trials])
    rep, rep_ok = figure([t.repair_s for t in trials])
    # For reference: the uniform sample alone checks a given id with p = sample / ids per pass (what a lost id
    # dropped from the recent ids, or one the auditor forgot, would wait for).
    uniform = args.ids / args.sample * args.interval_s
    print(f"RESULT (b) loss {name:9s} {args.ids:,} ids, {writes:,} written then {lost:,} of them lost: detection "
          f"{det} (goal <= 60 s: {'met' if det_ok else 'missed'}); repair {rep} (goal <= 60 s: "
          f"{'met' if rep_ok else 'missed'}); {len(trials)} trials at random points of the interval; the uniform "
          f"sample alone would take ~{uniform:,.0f} s on average per lost id; {_settings(args)}; "
          f"{load_average()}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=200_000, help="(a) records per processor run")
    parser.add_argument("--runs", type=int, default=3, help="(a) runs with and without the auditor (medians)")
    parser.add_argument("--ids", type=int, default=10_000, help="(b) ids in the group")
    parser.add_argument("--busy-writes", type=int, default=1_000, help="(b) ids written before a busy loss")
    parser.add_argument("--loss-runs", type=int, default=3, help="(b) trials per loss shape")
    parser.add_argument("--max-wait", type=float, default=120.0, help="(b) seconds to wait for detection and repair")
    parser.add_argument("--interval-s", type=float, default=DEFAULT_INTERVAL_S, help="the auditor's interval (default: its own)")
    parser.add_argument("--sample", type=int, default=DEFAULT_SAMPLE, help="the auditor's ids per pass (default: its own)")
    parser.add_argument("--batch-size", type=int, default=1000, help="the processor's --batch-size")
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=300.0, help="bound on any one wait, seconds")
    parser.add_argument("--only", choices=["cost", "loss"])
    parser.add_argument("--shapes", default="quiet,busy,busy-big", help="(b) loss shapes to run, comma-separated")
    args = parser.parse_args(argv)
    args.shapes = [x.strip() for x in args.shapes.split(",") if x.strip()]
    if not args.shapes or set(args.shapes) - {"quiet", "busy", "busy-big"}:
        parser.error("--shapes takes quiet, busy and/or busy-big")
    if min(args.records, args.runs, args.ids, args.busy_writes, args.loss_runs, args.sample, args.batch_size) < 1 \
            or args.interval_s <= 0 or args.max_wait <= 0:
        parser.error("counts and durations must be positive")

    import redis

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # exit through the finally blocks
    config = Config.from_env()
    redis_client = redis.Redis.from_url(config.require("redis_url"))
    config.require("kafka_bootstrap")
    print(f"auditor benchmark: (a) {args.records:,} records x {args.runs} runs; (b) {args.ids:,} ids, "
          f"{args.loss_runs} trials per shape; {_settings(args)}; {load_average()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="fs-bench-auditor-") as tmp:
        try:
            if args.only in (None, "cost"):
                cost(config, args, redis_client, Path(tmp))
            if args.only in (None, "loss"):
                loss(config, args, redis_client, Path(tmp))
        except BaseException:
            for log in Path(tmp).glob("*.log"):  # the workers' own words, before they are deleted
                print(f"--- {log.name} (last lines)\n" + "\n".join(log.read_text().splitlines()[-20:]))
            raise
    print(f"after: {load_average()}")
    redis_client.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
