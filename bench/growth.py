"""Benchmark: how cost grows with the work, each against a baseline from the same run, with plots.

  (a) width   CPU-µs per record of the online apply path (route: decode + schema check; then
              write-if-newer in Redis, in batches of 1,000) for groups of 10, 100 and 1,000 features,
              against a baseline in the same run: raw redis-py pipelined HSET of the same fields.
  (b) keys    Redis memory and get_record p50/p99 with 10k, 1M and 10M records in the online store,
              against raw HGETALL p50/p99 on the same keys. Records have the layout the processor
              writes (one hash, 10 features + meta fields): one is written through the store, then
              copied to N keys with pipelined HSETs (writing 10M through the Lua path would take
              the run's whole budget and measure nothing new). A throw-away redis-server of its own.

Prints RESULT lines and draws bench/out/growth_width.png and bench/out/growth_keys.png (matplotlib,
from the `bench` extra). Loopback only; bounded in count and time:

  .venv/bin/python bench/growth.py [--records 20000] [--keys 10000,1000000,10000000]
"""

# ruff: noqa: E402  (the sys.path fix below must run before the imports)
from __future__ import annotations

import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:] = [str(_HERE.parent)] + [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import argparse
import random
import resource
import subprocess
import tempfile
import time
from typing import Any

import orjson
import redis

from bench._common import load_average, median, percentile
from featurestream.stack.ports import free_port
from featurestream.stack.redis_server import find_redis_server, redis_answers, redis_argv
from schemas.group import FeatureGroup
from schemas.names import online_key
from schemas.types import FeatureDefinition, ScalarType
from schemas.validate import compile_validator
from schemas.wire import encode
from sinks.online.store import OnlineStore
from streams.group_view import GroupView
from streams.online.applier import OnlineApplier
from streams.route import RawMessage

OUT = _HERE / "out"
PREFIX = "growth"


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def wide_group(name: str, n_features: int) -> FeatureGroup:
    kinds = [ScalarType.INTEGRAL, ScalarType.FRACTIONAL, ScalarType.STRING]
    feats = [FeatureDefinition("id", ScalarType.STRING), FeatureDefinition("event_time", ScalarType.STRING)]
    feats += [FeatureDefinition(f"f{i}", kinds[i % 3]) for i in range(n_features - 2)]
    return FeatureGroup(name=name, record_identifier_name="id", event_time_name="event_time", features=tuple(feats))


def wide_record(group: FeatureGroup, i: int, rng: random.Random) -> dict[str, Any]:
    rec: dict[str, Any] = {"id": f"r{i % 5000}", "event_time": f"2031-01-01T00:{i % 60:02d}:{(i // 60) % 60:02d}Z"}
    for f in group.features[2:]:
        rec[f.name] = (rng.randrange(10**9) if f.type is ScalarType.INTEGRAL
                       else rng.random() * 1e6 if f.type is ScalarType.FRACTIONAL else f"v{rng.randrange(10**6)}")
    return rec


def width(client: redis.Redis, url: str, n_features: int, n_records: int) -> tuple[float, float]:
    """(our CPU-µs/record, raw HSET CPU-µs/record) for groups of ``n_features`` features."""
    g = wide_group(f"w{n_features}", n_features)
    v = compile_validator(g)
    rng = random.Random(n_features)
    raws = []
    for i in range(n_records):
        k, val, h = encode(v.validate(wide_record(g, i, rng)))
        raws.append(RawMessage(f"{PREFIX}.{g.name}", 0, i, k, val, h, 0))
    store = OnlineStore.from_url(url, PREFIX)
    applier = OnlineApplier(GroupView(lambda: {g.name: g}), PREFIX, store, None)  # type: ignore[arg-type]
    ours, raw = [], []
    for _ in range(3):
        client.flushdb()
        c0 = cpu_s()
        for i in range(0, n_records, 1000):
            applier(raws[i:i + 1000])
        ours.append((cpu_s() - c0) / n_records * 1e6)
        client.flushdb()
        # Baseline: what a hand-written consumer would do with the same records: decode the JSON
        # payload and HSET its fields, pipelined, no ordering or checks.
        c0 = cpu_s()
        for i in range(0, n_records, 1000):
            pipe = client.pipeline(transaction=False)
            for r in raws[i:i + 1000]:
                body = orjson.loads(r.value)
                pipe.hset(online_key(PREFIX, g.name, body["id"]),
                          mapping={k: orjson.dumps(x) for k, x in body["record"].items() if x is not None})
            pipe.execute()
        raw.append((cpu_s() - c0) / n_records * 1e6)
    store.close()
    return median(ours), median(raw)


def keys_phase(client: redis.Redis, url: str, n_keys: int, reads: int) -> dict[str, float]:
    """Fill the store to ``n_keys`` records; memory, and get_record vs HGETALL latency."""
    g = wide_group("k10", 10)
    store = OnlineStore.from_url(url, PREFIX)
    v = compile_validator(g)
    msg = v.validate(wide_record(g, 0, random.Random(1)))
    store.apply_batch(g, [(msg, 0, 0)])
    template = {k.decode(): val for k, val in client.hgetall(online_key(PREFIX, g.name, msg.id)).items()}
    have = client.dbsize()
    pipe = client.pipeline(transaction=False)
    for i in range(have, n_keys):
        pipe.hset(online_key(PREFIX, g.name, f"k{i}"), mapping=template)
        if i % 5000 == 4999:
            pipe.execute()
    pipe.execute()
    mem = client.info("memory")["used_memory"] / 2**20
    rng = random.Random(n_keys)
    ids = [f"k{rng.randrange(1, n_keys)}" for _ in range(reads)]
    lat_ours, lat_raw = [], []
    perf = time.perf_counter_ns
    for start in range(0, reads, 500):
        for rid in ids[start:start + 500]:
            t = perf()
            store.get_record(g, rid)
            lat_ours.append(perf() - t)
        for rid in ids[start:start + 500]:
            key = online_key(PREFIX, g.name, rid)
            t = perf()
            client.hgetall(key)
            lat_raw.append(perf() - t)
    lat_ours.sort()
    lat_raw.sort()
    store.close()
    return {"keys": n_keys, "memory_mb": mem, "bytes_per_key": mem * 2**20 / n_keys,
            "p50_us": percentile(lat_ours, 50) / 1e3, "p99_us": percentile(lat_ours, 99) / 1e3,
            "raw_p50_us": percentile(lat_raw, 50) / 1e3, "raw_p99_us": percentile(lat_raw, 99) / 1e3}


def plot(widths: list[tuple[int, float, float]], keys: list[dict[str, float]]) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    OUT.mkdir(exist_ok=True)
    out = []
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([w[0] for w in widths], [w[1] for w in widths], "o-", label="featurestream apply (route + write-if-newer)")
    ax.plot([w[0] for w in widths], [w[2] for w in widths], "s--", label="baseline: decode + pipelined HSET")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("features per record")
    ax.set_ylabel("CPU-µs per record (client side)")
    ax.set_title("Online apply cost vs record width")
    ax.legend()
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    out.append(OUT / "growth_width.png")
    fig.savefig(out[-1], dpi=110)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    xs = [k["keys"] for k in keys]
    a1.plot(xs, [k["memory_mb"] for k in keys], "o-")
    a1.set_xscale("log")
    a1.set_yscale("log")
    a1.set_xlabel("records in the online store")
    a1.set_ylabel("Redis used_memory (MiB)")
    a1.set_title("Redis memory (10-feature records)")
    a1.grid(True, which="both", alpha=0.3)
    a2.plot(xs, [k["p99_us"] for k in keys], "o-", label="get_record p99")
    a2.plot(xs, [k["raw_p99_us"] for k in keys], "s--", label="raw HGETALL p99")
    a2.plot(xs, [k["p50_us"] for k in keys], "o:", label="get_record p50")
    a2.set_xscale("log")
    a2.set_xlabel("records in the online store")
    a2.set_ylabel("latency (µs)")
    a2.set_title("Read latency vs store size")
    a2.legend()
    a2.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    out.append(OUT / "growth_keys.png")
    fig.savefig(out[-1], dpi=110)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=20_000, help="records per width (10 and 100 features)")
    parser.add_argument("--features", default="10,100,1000", help="record widths to measure")
    parser.add_argument("--keys", default="10000,1000000,10000000", help="online store sizes to measure")
    parser.add_argument("--reads", type=int, default=20_000, help="get_record calls per store size")
    args = parser.parse_args(argv)
    widths_wanted = [int(x) for x in args.features.split(",")]
    sizes = [int(x) for x in args.keys.split(",")]
    print(f"growth benchmark: widths {widths_wanted}, store sizes {sizes}; {load_average()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="fs-bench-growth-") as tmp:
        port = free_port()
        server = subprocess.Popen(redis_argv(find_redis_server(), port, Path(tmp)), stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        url = f"redis://127.0.0.1:{port}/0"
        try:
            deadline = time.monotonic() + 20
            while not redis_answers(url):
                if time.monotonic() > deadline:
                    raise RuntimeError("the benchmark's redis-server did not answer")
                time.sleep(0.1)
            client = redis.Redis.from_url(url)
            widths = []
            for n in widths_wanted:
                # 1,000-feature records are 100x the work: fewer of them keep the run bounded.
                count = args.records if n <= 100 else max(1000, args.records // 10)
                ours, raw = width(client, url, n, count)
                widths.append((n, ours, raw))
                print(f"RESULT (a) width {n:>5} features: apply {ours:8.1f} CPU-µs/record   baseline decode+HSET "
                      f"{raw:8.1f} CPU-µs/record   ratio {ours / raw:.2f}   ({ours / n:.2f} µs per feature; "
                      f"{count:,} records, median of 3)", flush=True)
            client.flushdb()
            keys = []
            for n in sizes:
                k = keys_phase(client, url, n, args.reads)
                keys.append(k)
                print(f"RESULT (b) keys {n:>11,}: Redis {k['memory_mb']:9.1f} MiB ({k['bytes_per_key']:.0f} B/record)  "
                      f"get_record p50 {k['p50_us']:.0f} µs p99 {k['p99_us']:.0f} µs   raw HGETALL p50 "
                      f"{k['raw_p50_us']:.0f} µs p99 {k['raw_p99_us']:.0f} µs   ratio p99 "
                      f"{k['p99_us'] / k['raw_p99_us']:.2f}", flush=True)
        finally:
            server.kill()
            server.wait(timeout=30)
    for path in plot(widths, keys):
        print(f"plot: {path.relative_to(_HERE.parent)}")
    print(f"after: {load_average()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
