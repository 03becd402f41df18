"""Microbenchmark, in process, no servers: the offline sink's CPU per row from raw Kafka messages to
table-shaped Arrow rows (route + buffer + prepare: what a flush uploads), batch path against the
per-record path in the same run.

Both run ``OfflineApplier.add`` over the same RawMessages (chunks of ``--chunk``, the sink's
``add_chunk``) into an ``OfflineWriter`` on a local SQLite catalog, then ``PartitionWriter.prepare``
per partition (rows to the table's shape; nothing is uploaded or committed). The raw row is the
10-feature bench group's, as ``bench/offline_sink.py`` publishes it.

  .venv/bin/python bench/batch_decode.py [--records 20000] [--repeat 3] [--chunk 1000]
"""

# ruff: noqa: E402  (the sys.path fix below must run before the imports)
from __future__ import annotations

import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:] = [str(_HERE.parent)] + [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import argparse
import tempfile
import time
from dataclasses import replace

from bench._common import customer, customers_group, load_average, median
from schemas.validate import compile_validator
from schemas.wire import encode
from sinks.offline.catalog import OfflineTables
from sinks.offline.writer import OfflineWriter
from streams.group_view import GroupView
from streams.offline.applier import OfflineApplier
from streams.route import RawMessage

PREFIX = "bench"


def run(raws: list[RawMessage], group, chunk: int, batch_decode: bool, tables: OfflineTables) -> float:
    writer = OfflineWriter(tables)
    applier = OfflineApplier(GroupView(lambda: {group.name: group}), writer, None, PREFIX,
                             batch_decode=batch_decode)
    started = time.process_time()
    for start in range(0, len(raws), chunk):
        applier.add(raws[start:start + chunk])
    rows = 0
    for w in list(writer._writers.values()):  # what a flush does before the upload
        prepared = w.prepare()
        rows += 0 if prepared is None or prepared.rows is None else prepared.rows.num_rows
    seconds = time.process_time() - started
    if rows != len(raws):
        raise SystemExit(f"{'batch' if batch_decode else 'per-record'} path made {rows} rows of {len(raws)}")
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=20_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--chunk", type=int, default=1000)
    ap.add_argument("--partitions", type=int, default=3)
    args = ap.parse_args()
    tmp = tempfile.mkdtemp()
    group = replace(customers_group("bench"), offline_uri=f"{tmp}/bench")
    v = compile_validator(group)
    raws = []
    for i in range(args.records):
        key, value, headers = encode(v.validate(customer(i % 100_000, second=i % 3600)))
        p = i % args.partitions
        raws.append(RawMessage(f"{PREFIX}.bench", p, i // args.partitions, key, value, headers))
    raws.sort(key=lambda r: (r.offset, r.partition))
    tables = OfflineTables.open(f"sqlite:///{tmp}/catalog.db", PREFIX)
    print(f"batch decode microbenchmark: {args.records:,} records, chunks of {args.chunk}; {load_average()}")
    per_record, batch = [], []
    for _ in range(args.repeat):
        per_record.append(run(raws, group, args.chunk, False, tables))
        batch.append(run(raws, group, args.chunk, True, tables))
    a, b = median(per_record) / args.records * 1e6, median(batch) / args.records * 1e6
    print(f"RESULT batch decode   batch path {b:6.2f} CPU-us/row   per-record path {a:6.2f} CPU-us/row   "
          f"ratio {a / b:.1f}x (median of {args.repeat}; route + buffer + rows in the table's shape; "
          f"{load_average()})")


if __name__ == "__main__":
    main()
