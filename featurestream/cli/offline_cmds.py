"""`featurestream query | snapshot | ddl | offline migrate`: the offline store (Iceberg tables) from the shell."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import orjson

from featurestream.cli._common import store_from_args


def register(sub: argparse._SubParsersAction) -> None:
    query = sub.add_parser(
        "query", help="run SQL over the offline store",
        description="Run SQL (DuckDB dialect, window functions included) over the offline store: each feature group "
                    "is a table by its name (quote names with '-': \"my-group\"). The event-time column is a UTC "
                    "timestamp. Example: featurestream query 'SELECT count(*) FROM customers'")
    query.add_argument("sql")
    query.add_argument("--format", choices=["table", "csv", "json"], default="table",
                       help="table (default), csv, or json (one array of row objects)")
    query.add_argument("--as-of-commit", metavar="TIME",
                       help="time travel by commit: read every table as it was committed at TIME (ISO-8601 "
                            "with a zone, or epoch seconds); within the snapshot retention (7 days by default)")
    query.set_defaults(func=_query)

    snap = sub.add_parser("snapshot", help="latest row per identifier from the offline store (time travel)",
                          description="The latest row per identifier whose event time is at or before --as-of "
                                      "(default: now), without deleted records unless --include-deleted.")
    snap.add_argument("group")
    snap.add_argument("--as-of", help="ISO-8601 time (default: everything; an aggregation group: its values now)")
    snap.add_argument("--include-deleted", action="store_true")
    snap.add_argument("--as-of-commit", metavar="TIME",
                      help="read the table as it was committed at TIME (time travel by commit; --as-of is by "
                           "event time, and both combine)")
    snap.add_argument("--format", choices=["table", "csv", "json"], default="table")
    snap.set_defaults(func=_snapshot)

    ddl = sub.add_parser("ddl", help="print how Spark, Trino and Athena read a group's Iceberg table",
                         description="Print the catalog settings Spark (Iceberg JDBC catalog), Trino and Athena (AWS "
                                     "Glue) need to read the group's Iceberg table, each followed by a SELECT.")
    ddl.add_argument("group")
    ddl.set_defaults(func=_ddl)

    offline = sub.add_parser("offline", help="offline store administration (migrate a pre-Iceberg table)",
                             description="Administration of the offline store's Iceberg tables.")
    osub = offline.add_subparsers(dest="offline_command", metavar="ACTION")
    osub.required = True
    mig = osub.add_parser(
        "migrate", help="bring a group's pre-Iceberg offline table into its Iceberg table (rewrites the rows)",
        description="Bring a group's offline table in the layout before Iceberg (data/year=/month=/day=/hour=/"
                    "*.parquet with compaction manifests in _manifests/) into its Apache Iceberg table. The rows "
                    "are REWRITTEN, not registered: the old files store timestamps as Parquet INT64 nanoseconds, "
                    "which an Iceberg v2 table cannot hold (and Spark cannot read), and lack the exact "
                    "_event_time_ns column. Every live row is read, converted (event time to microseconds plus "
                    "the exact _event_time_ns), rows with the same Kafka (topic, partition, offset) kept once, "
                    "and appended in ONE commit that records the next Kafka offset of every partition, so the "
                    "sink resumes right after the migrated rows. Run it before starting the new sink. "
                    "Idempotent: a second run finds the migration's commit and changes nothing; a run killed "
                    "midway committed nothing and is simply run again. The old files are left in place.")
    mig.add_argument("group")
    mig.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    mig.add_argument("--kill-after-upload", action="store_true", help=argparse.SUPPRESS)  # crash tests only
    mig.set_defaults(func=_migrate)


def _query(args: argparse.Namespace) -> int:
    with store_from_args(args) as store:
        table = store.query(args.sql, as_of_commit=args.as_of_commit)
    _print_table(table, args.format)
    return 0


def _snapshot(args: argparse.Namespace) -> int:
    with store_from_args(args) as store:
        table = store.snapshot(args.group, args.as_of, args.include_deleted, as_of_commit=args.as_of_commit)
    _print_table(table, args.format)
    return 0


def _ddl(args: argparse.Namespace) -> int:
    with store_from_args(args) as store:
        print(store.ddl(args.group))
    return 0


def _kill_self(step: str) -> None:
    import os
    import signal

    os.kill(os.getpid(), signal.SIGKILL)


def _migrate(args: argparse.Namespace) -> int:
    from sinks.offline.migrate import migrate

    def progress(line: str) -> None:
        if not args.quiet:
            print(f"migrate: {line}", file=sys.stderr, flush=True)

    with store_from_args(args) as store:
        group = store.describe_feature_group(args.group)
        result = migrate(group, store.offline_tables(), store.config.storage_options(), progress=progress,
                         hook=_kill_self if args.kill_after_upload else None)
    offsets = ", ".join(f"{t}[{p}]={o}" for (t, p), o in sorted(result.offsets.items()))
    if result.already_done:
        print(f"{args.group}: already migrated (snapshot {result.snapshot_id}: {result.rows} rows from "
              f"{result.files} files); nothing to do. The table records offsets {offsets}")
    else:
        print(f"{args.group}: migrated {result.rows} rows from {result.files} files (rewritten as Iceberg data "
              f"files; {result.duplicates} duplicate rows dropped) in snapshot {result.snapshot_id}; the sink "
              f"resumes at {offsets}")
    return 0


def _print_table(table: Any, fmt: str) -> None:
    out = sys.stdout
    if fmt == "json":
        out.write(orjson.dumps(table.to_pylist(), default=str, option=orjson.OPT_NAIVE_UTC).decode() + "\n")
    elif fmt == "csv":
        frame = table.to_pandas()
        frame.to_csv(out, index=False)
    else:
        import pandas as pd

        with pd.option_context("display.max_rows", 200, "display.max_columns", 50, "display.width", 200):
            frame = table.to_pandas()
            out.write((frame.to_string(index=False) if len(frame) else "(no rows)") + "\n")
            if len(frame) > 200:
                out.write(f"({len(frame)} rows)\n")
