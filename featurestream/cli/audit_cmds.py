"""`featurestream audit` (compare the stores with the topics once) and `featurestream auditor` (keep doing it)."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from featurestream.cli import CliError
from featurestream.cli._common import add_metrics_flags, config_from_args, metrics_port_from_args, print_json
from featurestream.config import Config

if TYPE_CHECKING:
    from sinks.offline.catalog import OfflineTables
    from sinks.online.store import OnlineStore
    from streams.audit import Auditor


def register(sub: argparse._SubParsersAction) -> None:
    audit = sub.add_parser(
        "audit", help="compare the online store and the offline tables with the topics",
        description="Check that the stores equal their topics. Online: a sample of ids (every id with --all), each "
                    "the latest record on the topic by schemas/ordering.py's rule, against what GetRecord returns. "
                    "Offline: every offset below the table's recorded position is in the table exactly once "
                    "(records not targeted at the offline store and dead-lettered ones excepted), plus a sample of "
                    "rows compared by value. Records newer than the consumer's committed position (online) or the "
                    "table's recorded position (offline) are in flight, counted apart, never mismatches. Exit "
                    "status 1 on any real mismatch.")
    audit.add_argument("groups", nargs="*", metavar="GROUP", help="feature groups (default: every group)")
    audit.add_argument("--all", action="store_true", dest="every_id", help="check every id online, not a sample")
    audit.add_argument("--sample", type=int, default=100, metavar="N",
                       help="ids checked online per group (100); also the offline rows compared by value (at most 100)")
    audit.add_argument("--json", action="store_true", help="machine-readable output")
    audit.add_argument("--stores", choices=["both", "online", "offline"], default="both")
    audit.set_defaults(func=_audit)

    auditor = sub.add_parser(
        "auditor", help="run the continuous auditor (parity metrics, self-healing of online mismatches)",
        description="Audit a sample of every group every --interval-s: export featurestream_parity_checked_total, "
                    "featurestream_parity_mismatch_total{store,group} and featurestream_parity_in_flight_total, log "
                    "each mismatch with its id and both values, and heal online mismatches by re-applying the "
                    "topic's latest version of each id (a whole group's replay past --heal-group-above).")
    auditor.add_argument("--interval-s", type=float, default=30.0, help="seconds between audits (30)")
    auditor.add_argument("--sample", type=int, default=100, metavar="N", help="ids per group and audit (100)")
    auditor.add_argument("--rows", type=int, default=20, help="offline rows compared by value per group and audit (20)")
    auditor.add_argument("--offline-every", type=int, default=1, metavar="K",
                         help="check the offline tables every K-th audit (1); each check reads every table's "
                              "offset columns")
    auditor.add_argument("--no-heal", action="store_true", help="report online mismatches, do not repair them")
    auditor.add_argument("--heal-group-above", type=int, default=20, metavar="N",
                         help="more than N online mismatches in one audit of a group replay the whole group (20)")
    add_metrics_flags(auditor, 9110)
    auditor.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    auditor.set_defaults(func=_auditor)


def _stores(config: Config, which: str) -> tuple[OnlineStore | None, OfflineTables | None]:
    from sinks.offline.catalog import OfflineTables
    from sinks.online.store import OnlineStore

    store = OnlineStore.from_url(config.require("redis_url"), config.topic_prefix) \
        if which in ("both", "online") else None
    tables = OfflineTables.open(config.catalog(), config.topic_prefix, config.storage_options()) \
        if which in ("both", "offline") else None
    return store, tables


def build_auditor(config: Config, which: str = "both") -> Auditor:
    """An ``streams.audit.Auditor`` over ``config``'s Kafka, Redis and catalog."""
    from streams.audit import Auditor
    from streams.group_view import GroupView
    from streams.online.engine import online_group_id
    from streams.registry import Registry

    registry = Registry(config.kafka(), prefix=config.topic_prefix, offline_base_uri=config.offline_uri)
    store, tables = _stores(config, which)
    return Auditor(config.kafka(), config.topic_prefix, GroupView(registry.refresh), store=store,
                   tables=tables, online_group_id=online_group_id(config.topic_prefix))


def _audit(args: argparse.Namespace) -> int:
    from streams.audit_report import to_json, to_text

    if args.sample < 1:
        raise CliError(f"--sample must be a positive number of ids; got {args.sample}", status=2)
    auditor = build_auditor(config_from_args(args), args.stores)
    try:
        reports = auditor.audit(args.groups, sample=args.sample, every_id=args.every_id,
                                rows=min(args.sample, 100))
    finally:
        auditor.close()
    if args.json:
        print_json(to_json(reports))
    else:
        print(to_text(reports))
    return 1 if any(r.mismatch_count for r in reports) else 0


def _auditor(args: argparse.Namespace) -> int:
    import logging

    from featurestream.stack.workers import announce
    from streams.auditor import AuditorSettings, run_auditor

    if args.interval_s <= 0 or args.sample < 1 or args.offline_every < 1:
        raise CliError("--interval-s must be > 0, --sample and --offline-every >= 1", status=2)
    config = Config.from_env(catalog_uri=getattr(args, "catalog_uri", None))
    metrics_port = metrics_port_from_args(args)
    logging.basicConfig(level=args.log_level.upper(),
                        format="[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s")
    print("featurestream: auditor starting (Ctrl-C stops it)", file=sys.stderr)
    settings = AuditorSettings(interval_s=args.interval_s, sample=args.sample, rows=args.rows,
                               offline_every=args.offline_every, heal=not args.no_heal,
                               heal_group_above=args.heal_group_above)
    run_auditor(build_auditor(config), config.require("redis_url"), settings,
                metrics_port=metrics_port, metrics_host=args.metrics_host,
                on_metrics_port=lambda port: announce(config.state_dir, "auditor", args.metrics_host, port))
    return 0
