"""`featurestream sink`: the offline sink (Kafka → an Apache Iceberg table per group, exactly once)."""

from __future__ import annotations

import argparse
import logging
import sys

from featurestream.cli import CliError
from featurestream.cli._common import add_metrics_flags, metrics_port_from_args
from featurestream.config import Config
from sinks.offline.errors import OfflineLayoutError
from sinks.offline.rotation import DEFAULT_MAX_AGE_S, RotationPolicy


def register(sub: argparse._SubParsersAction) -> None:
    sink = sub.add_parser(
        "sink", help="run the offline sink (Kafka → Apache Iceberg tables, exactly once, compacted)",
        description="Consume every offline-enabled feature group's topic (consumer group '<prefix>-offline', new "
                    "groups picked up without a restart) and write each record as one row of the group's Apache "
                    "Iceberg table under FEATURESTREAM_OFFLINE_URI (s3://bucket/prefix or a local path), "
                    "registered in the catalog FEATURESTREAM_CATALOG_URI. Each commit records the Kafka offsets "
                    "it covers in the same snapshot and the sink resumes from there, so a crash anywhere (even "
                    "kill -9), lost consumer-group offsets or a zombie sink leave every record exactly once. "
                    "Small files are compacted in the background. Run several for more throughput; Kafka shares "
                    "the partitions among them.")
    add_metrics_flags(sink, 9109)
    sink.add_argument("--max-age-s", type=float, default=DEFAULT_MAX_AGE_S,
                      help="close a file at most this many seconds after its first record (50: with the commit, "
                           "rows are queryable within a minute at the 99th percentile)")
    sink.add_argument("--max-records", type=int, default=500_000, help="close a file at this many records (500000)")
    sink.add_argument("--max-bytes", type=int, default=64 * 1024 * 1024,
                      help="close a file at about this many buffered bytes (64 MiB)")
    sink.add_argument("--compact-every-s", type=float, default=300.0,
                      help="run background compaction this often (0: never)")
    sink.add_argument("--target-file-mb", type=float, default=128.0, help="compaction's target file size (128)")
    sink.add_argument("--retention", default="7d",
                      help="keep snapshots (time travel by commit: every commit of the last hour, one an hour "
                           "before) and unreferenced files this long before expiring / removing them: a number "
                           "of seconds or 30m, 12h, 7d (7d)")
    sink.add_argument("--maintain-every-s", type=float, default=3600.0,
                      help="run snapshot expiry and orphan-file removal this often (3600)")
    sink.add_argument("--instance-id", help="static group membership id: a restart with the same id gets its "
                                            "partitions back without waiting for the session timeout")
    sink.add_argument("--kill-at-compaction-step", help=argparse.SUPPRESS)  # crash tests only
    sink.add_argument("--kill-after-flushes", type=int, help=argparse.SUPPRESS)  # crash tests only
    sink.add_argument("--kill-stage", default="after_commit", help=argparse.SUPPRESS)  # crash tests only
    sink.add_argument("--consumer-group", help=argparse.SUPPRESS)  # zombie tests only
    sink.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    sink.set_defaults(func=_sink)


def settings_from_args(args: argparse.Namespace) -> object:
    """SinkSettings from the flags; a bad value is a usage error naming the flag and what is valid."""
    from streams.offline.worker import SinkSettings

    try:
        policy = RotationPolicy(max_records=args.max_records, max_bytes=args.max_bytes, max_age_s=args.max_age_s)
    except OfflineLayoutError as exc:
        flag = str(exc).split(".", 1)[1].split(" ", 1)[0].replace("_", "-") if "." in str(exc) else "rotation"
        raise CliError(f"--{flag}: {exc}", status=2) from None
    retention_s = parse_duration_s(args.retention, "--retention")
    for flag, value in (("--compact-every-s", args.compact_every_s), ("--maintain-every-s", args.maintain_every_s)):
        if not value >= 0 or value == float("inf"):
            raise CliError(f"{flag} must be a finite number of seconds >= 0; got {value!r}", status=2)
    if not 0 < args.target_file_mb < 1024 * 1024:
        raise CliError(f"--target-file-mb must be a positive size in MB below 1048576; got {args.target_file_mb!r}",
                       status=2)
    from sinks.offline.partition_writer import STAGES

    if args.kill_stage not in (*STAGES, "after_commit"):
        raise CliError(f"--kill-stage must be one of {', '.join((*STAGES, 'after_commit'))}; got {args.kill_stage!r}",
                       status=2)
    return SinkSettings(policy=policy, compact_every_s=args.compact_every_s,
                        target_bytes=int(args.target_file_mb * 1024 * 1024), retention_s=retention_s,
                        maintain_every_s=args.maintain_every_s, instance_id=args.instance_id or None,
                        kill_at_compaction_step=args.kill_at_compaction_step,
                        kill_after_flushes=args.kill_after_flushes, kill_stage=args.kill_stage,
                        consumer_group=args.consumer_group or None)


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration_s(text: str, flag: str) -> float:
    """``30``, ``90s``, ``30m``, ``12h``, ``7d``, ``1w`` → seconds; a usage error naming ``flag`` otherwise."""
    raw = str(text).strip().lower()
    unit = raw[-1:] if raw[-1:] in _UNITS else "s"
    number = raw[:-1] if raw[-1:] in _UNITS else raw
    try:
        value = float(number) * _UNITS[unit]
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise CliError(f"{flag} must be a duration like 3600, 30m, 12h or 7d; got {text!r}", status=2)
    return value


def _sink(args: argparse.Namespace) -> int:
    from featurestream.stack.workers import announce
    from streams.offline.worker import run_sink

    settings = settings_from_args(args)
    metrics_port = metrics_port_from_args(args)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    print("featurestream: offline sink starting (Ctrl-C stops it after a final flush)", file=sys.stderr)
    config = Config.from_env(catalog_uri=getattr(args, "catalog_uri", None))
    run_sink(config.kafka(), config.topic_prefix, config.require("offline_uri"),
             config.catalog(), config.storage_options(), settings,  # type: ignore[arg-type]
             metrics_port=metrics_port, metrics_host=args.metrics_host,
             on_metrics_port=lambda port: announce(config.state_dir, "sink", args.metrics_host, port))
    return 0
