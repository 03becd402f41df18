"""Microbenchmark, in process, no servers: the online processor's CPU per record to judge a batch and
build its Redis script calls (``OnlineApplier.prepare``), by batch size, as columns against per record,
in the same run.

Why: the columnar decode (``schemas/batch.py``: pyarrow's JSON reader, then vectorized checks) has a
fixed cost per call, and the live processor's batches are small at moderate rates (it takes whatever
is fetched). ``streams/route.py`` judges a topic's messages per record below ``COLUMNS_MIN_ROWS``; this
prints the curve that threshold comes from, and what the processor now pays (``default``), and draws
bench/out/prepare_cost.png.

Both paths run the same ``OnlineApplier.prepare`` over the same messages of the 10-feature bench group,
with ``columns_from`` 1 (every batch as columns) and a number above every batch (every batch per record,
the baseline). The store is never connected: prepare writes nothing.

  .venv/bin/python bench/prepare_cost.py [--sizes 1,2,5,10,25,50,100,250,500,1000] [--records 20000]
"""

# ruff: noqa: E402  (the sys.path fix below must run before the imports)
from __future__ import annotations

import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:] = [str(_HERE.parent)] + [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import argparse
import time

import redis

from bench._common import customer, customers_group, load_average, median
from schemas.validate import compile_validator
from schemas.wire import encode
from sinks.online.store import OnlineStore
from streams.group_view import GroupView
from streams.online.applier import OnlineApplier
from streams.route import COLUMNS_MIN_ROWS, RawMessage

PREFIX = "bench"
OUT = _HERE / "out"


def messages(n: int) -> tuple[object, list[RawMessage]]:
    group = customers_group("customers")
    validator = compile_validator(group)
    out = []
    for k in range(n):
        key, value, headers = encode(validator.validate(customer(k), api_invocation_time_ns=time.time_ns()))
        out.append(RawMessage(f"{PREFIX}.customers", k % 3, k, key, value, headers))
    return group, out


def cpu_us_per_record(applier: OnlineApplier, raws: list[RawMessage], size: int, records: int) -> float:
    """CPU-µs per record of prepare over ``records`` messages cut into batches of ``size``."""
    batches = [raws[i:i + size] for i in range(0, min(records, len(raws)), size)]
    started = time.process_time()
    done = 0
    for batch in batches:
        applier.prepare(batch)
        done += len(batch)
    return (time.process_time() - started) / done * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1,2,5,10,25,50,100,250,500,1000",
                        help="batch sizes, comma-separated")
    parser.add_argument("--records", type=int, default=20_000, help="records prepared per size and path (at most)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each (median)")
    parser.add_argument("--no-plot", action="store_true")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    group, raws = messages(max(args.records, max(sizes)))
    store = OnlineStore(redis.Redis(port=1), PREFIX)  # never connected: prepare writes nothing
    applier = OnlineApplier(GroupView(lambda: {group.name: group}), PREFIX, store, None)  # type: ignore[arg-type]
    print(f"# bench/prepare_cost.py: OnlineApplier.prepare, 10-feature records; {load_average()}")
    rows = []
    for size in sizes:
        # fewer records for the tiny batches: they cost the most per record
        records = min(args.records, max(size * 50, 2_000))
        got = {}
        for name, columns_from in (("columns", 1), ("per record", 10**9), ("default", COLUMNS_MIN_ROWS)):
            applier.columns_from = columns_from
            got[name] = median(cpu_us_per_record(applier, raws, size, records) for _ in range(args.repeat))
        rows.append((size, got["columns"], got["per record"], got["default"]))
        print(f"RESULT prepare cost   batch {size:5d}: columns {got['columns']:8.1f}  per record (baseline) "
              f"{got['per record']:6.1f}  default (columns from {COLUMNS_MIN_ROWS}) {got['default']:6.1f} CPU-µs/record"
              f"   ratio default/baseline {got['default'] / got['per record']:.2f}", flush=True)
    print(f"# done; {load_average()}")
    if not args.no_plot:
        print(f"plot: {plot(rows)}")
    return 0


def plot(rows: list[tuple[int, float, float, float]]) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    OUT.mkdir(exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 4))
    xs = [r[0] for r in rows]
    ax.plot(xs, [r[1] for r in rows], "o-", label="as columns (pyarrow JSON reader + vectorized checks)")
    ax.plot(xs, [r[2] for r in rows], "s--", label="per record")
    ax.plot(xs, [r[3] for r in rows], "^:", label=f"default: columns from {COLUMNS_MIN_ROWS} records")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("records of one group in a batch")
    ax.set_ylabel("CPU-µs per record (prepare)")
    ax.set_title("Online processor: judging a batch, by batch size")
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    path = OUT / "prepare_cost.png"
    fig.savefig(path, dpi=110)
    return path


if __name__ == "__main__":
    sys.exit(main())
