"""Fetch and build what the local stack and the tests run, once: Kafka jars and Spark's Iceberg
jars (Maven), versitygw and helm (Go).

`make setup` runs ``python -m featurestream.stack.fetch`` so that `make test` and
`featurestream up` find everything cached; `up` calls :func:`fetch` too and it is a
no-op when the cache is complete.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from featurestream.stack import kafka, spark_jars
from featurestream.stack.errors import StackError
from featurestream.stack.helm import HELM_VERSION, find_helm
from featurestream.stack.layout import DEFAULT_CACHE_DIR, StackLayout
from featurestream.stack.s3_server import find_s3_server


def fetch(cache_dir: Path = DEFAULT_CACHE_DIR, *, search_path: str | None = None) -> dict[str, str]:
    """Ensure the Kafka jars, Spark's Iceberg jars, an S3 server and helm are available; what was
    found, per item."""
    layout = StackLayout(state_dir=cache_dir, cache_dir=cache_dir)
    libs = layout.kafka_libs(kafka.KAFKA_VERSION)
    kafka.find_java(search_path)  # Maven itself needs Java: say so plainly, before running it
    downloaded = kafka.fetch_jars(libs, search_path=search_path)
    # Spark's jars serve the interop test and users reading the tables from Spark (README).
    spark = spark_jars.fetch(cache_dir, search_path=search_path)
    s3 = find_s3_server(layout.bin_dir, search_path=search_path)
    # helm only renders the chart in tests (tests/unit/test_helm_chart.py); without Go those
    # tests fail and say why, but the local stack itself does not need it.
    helm = find_helm(layout.bin_dir, search_path=search_path, build=True)
    return {
        "kafka": f"{'fetched' if downloaded else 'cached'} Kafka {kafka.KAFKA_VERSION} jars in {libs}",
        "spark": f"{'fetched' if spark else 'cached'} Spark's Iceberg jars in {spark_jars.jars_dir(cache_dir)}",
        "s3": f"{s3.kind} at {s3.binary}",
        "helm": helm or f"not available: install Go to build helm {HELM_VERSION} (needed by the chart tests)",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m featurestream.stack.fetch", description=__doc__)
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR,
                        help=f"where jars and binaries are kept (default {DEFAULT_CACHE_DIR})")
    args = parser.parse_args(argv)
    started = time.monotonic()
    try:
        report = fetch(args.cache_dir.expanduser())
    except StackError as exc:
        print(f"featurestream fetch: error: {exc}", file=sys.stderr)
        return 1
    for item, what in report.items():
        print(f"{item}: {what}", file=sys.stderr)
    print(f"fetch done in {time.monotonic() - started:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
