"""The ``featurestream`` command line.

Each area of the CLI is a module here with ``register(subparsers)`` that adds its
sub-commands; every sub-command sets ``func(args) -> int`` as its handler.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from featurestream import __version__

# One module per area; each adds its sub-commands. Order is the order of `--help`.
COMMAND_MODULES = [
    "featurestream.cli.demo_cmds",
    "featurestream.cli.stack_cmds",
    "featurestream.cli.group_cmds",
    "featurestream.cli.publish_cmds",
    "featurestream.cli.online_cmds",
    "featurestream.cli.offline_cmds",
    "featurestream.cli.http_cmds",
    "featurestream.cli.sink_cmds",
    "featurestream.cli.deadletter_cmds",
    "featurestream.cli.audit_cmds",
]


class CliError(Exception):
    """An error to print as one line on stderr with exit status 2 (usage) or 1."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="featurestream",
        description=(
            "featurestream: a Kafka-native feature store. Apps publish feature records to one "
            "Kafka topic per feature group; a stream processor keeps the latest record per key "
            "in Redis; a sink writes the full history as Apache Iceberg tables (Parquet) on S3. Endpoints come from "
            "FEATURESTREAM_KAFKA_BOOTSTRAP, FEATURESTREAM_REDIS_URL, FEATURESTREAM_S3_ENDPOINT_URL "
            "and FEATURESTREAM_OFFLINE_URI; `eval \"$(featurestream up)\"` starts a local stack "
            "and sets them."
        ),
    )
    parser.add_argument("--version", action="version", version=f"featurestream {__version__}")
    parser.add_argument("--catalog-uri", default=None,
                        help="Iceberg catalog of the offline tables: an SQLAlchemy URL (sqlite:////path/catalog.db, "
                             "postgresql+psycopg2://user:pw@host/db) for pyiceberg's SQL catalog, or "
                             "rest+https://host/path?warehouse=..., glue://?glue.region=..., hive+thrift://host:9083 "
                             "(query parameters are the catalog's properties); default FEATURESTREAM_CATALOG_URI, "
                             "else the SQLite file in the state dir")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except CliError as exc:
        print(f"featurestream: error: {exc}", file=sys.stderr)
        return exc.status
    except KeyboardInterrupt:
        print("featurestream: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # typed errors from schemas/streams/sinks carry clear messages
        from featurestream.cli._errors import describe_error

        message = describe_error(exc)
        if message is None:
            raise
        print(f"featurestream: error: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
