"""`featurestream query | snapshot | ddl`: the offline store (Iceberg tables) from the shell."""

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
    snap.add_argument("--as-of", help="ISO-8601 time (default: everything)")
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
