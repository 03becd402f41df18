"""Helpers shared by CLI modules: the store from flags/env, JSON output."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import orjson

from featurestream.config import Config
from featurestream.sdk import FeatureStore


def add_metrics_flags(parser: argparse.ArgumentParser, default_port: int) -> None:
    """--metrics-port and --metrics-host of the long-running workers (processor, sink)."""
    parser.add_argument("--metrics-port", type=int, default=default_port,
                        help=f"port of /metrics, /health and /ready ({default_port}; 0: off); if it is taken, a "
                             "free port is used and the log names it")
    parser.add_argument("--metrics-host", default="127.0.0.1",
                        help="address the metrics port listens on (127.0.0.1; 0.0.0.0 in a container, so that "
                             "Prometheus and Kubernetes probes reach it)")


def metrics_port_from_args(args: argparse.Namespace) -> int | None:
    """The --metrics-port to serve on (None: off); a usage error names the flag and the valid range."""
    from featurestream.cli import CliError

    if args.metrics_port and not 0 < args.metrics_port < 65536:
        raise CliError(f"--metrics-port must be 1-65535 (or 0: off); got {args.metrics_port}", status=2)
    return args.metrics_port or None


def add_delivery_timeout(parser: argparse.ArgumentParser) -> None:
    """The --delivery-timeout flag of every command that publishes (Config.delivery_timeout_s)."""
    parser.add_argument("--delivery-timeout", type=float, metavar="SECONDS", dest="delivery_timeout_s",
                        help="how long to wait out a Kafka broker that answered before and is now away before "
                             "failing, naming what was not delivered (default: $FEATURESTREAM_DELIVERY_TIMEOUT "
                             "or 120); a broker that never answered is reported within a few seconds")


def config_from_args(args: argparse.Namespace) -> Config:
    """The environment's Config with the command's flags over it (``--delivery-timeout``, the global
    ``--catalog-uri``)."""
    return Config.from_env(delivery_timeout_s=getattr(args, "delivery_timeout_s", None),
                           catalog_uri=getattr(args, "catalog_uri", None))


def store_from_args(args: argparse.Namespace) -> FeatureStore:
    return FeatureStore(config_from_args(args))


def print_json(obj: Any, *, pretty: bool = True) -> None:
    opts = orjson.OPT_INDENT_2 if pretty else 0
    sys.stdout.write(orjson.dumps(obj, option=opts | orjson.OPT_NON_STR_KEYS, default=str).decode() + "\n")


def parse_json_arg(text: str, what: str) -> Any:
    from featurestream.cli import CliError

    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise CliError(f"{what} is not valid JSON: {exc}", status=2) from exc
