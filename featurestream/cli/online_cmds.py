"""`featurestream process | get | batch-get | replay | rebuild-online`."""

from __future__ import annotations

import argparse
import sys

from featurestream.cli import CliError
from featurestream.cli._common import add_metrics_flags, metrics_port_from_args, print_json, store_from_args
from featurestream.config import Config
from schemas.eventtime import parse_event_time


def register(sub: argparse._SubParsersAction) -> None:
    proc = sub.add_parser(
        "process", help="run the online stream processor (Kafka → Redis)",
        description="Run the online processor (consumer group '<prefix>-online'): it keeps the latest record per "
                    "identifier, by event time, in Redis, picks up new feature groups without a restart, and "
                    "rebuilds the online store from Kafka when Redis loses it. Run several for more throughput; "
                    "Kafka shares the partitions among them (all with the same --engine).")
    proc.add_argument("--engine", choices=["confluent", "faust"], default="confluent",
                      help="confluent (default): confluent-kafka's consumer driving the apply step in-process; "
                           "faust: the faust-streaming app, apply step in a child process. Every processor of "
                           "one deployment must use the same engine (their partition assignors differ)")
    add_metrics_flags(proc, 9108)
    proc.add_argument("--batch-size", type=int, default=1000, help="records per Redis round trip (1000)")
    proc.add_argument("--batch-wait-ms", type=float, default=5.0,
                      help="faust engine: longest wait to fill a batch before applying it (5 ms); the confluent "
                           "engine applies whatever has arrived at once")
    proc.add_argument("--fetch-wait-ms", type=_milliseconds, default=10,
                      help="confluent engine: how long the broker may hold a fetch to gather 64 KiB (10 ms). Fewer, "
                           "larger batches under load (about a third less CPU for the processor and the broker at "
                           "5,000 records/s, and the freshness that comes with it), at most this much added latency for a lone record, and 100 fetches a "
                           "second when idle; 0 keeps librdkafka's defaults (answer at once, 500 ms when idle)")
    proc.add_argument("--apply-in-thread", action="store_true",
                      help="faust engine: apply batches in a thread of this process, not a child process: one core "
                           "and less memory, about 70%% of the throughput (measured 7.4k vs 10.1k records/s)")
    proc.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    proc.set_defaults(func=_process)

    get = sub.add_parser("get", help="read one record from the online store",
                         description="Print the latest record of ID as one JSON object. A missing, deleted or "
                                     "expired record exits with status 1.")
    get.add_argument("group")
    get.add_argument("record_id")
    get.add_argument("--features", help="comma-separated feature names (default: all)")
    get.add_argument("--expires-at", action="store_true", help="also print when the record expires")
    get.set_defaults(func=_get)

    replay = sub.add_parser(
        "replay", help="re-read a group's topic into the online or offline store (idempotent)",
        description="Re-read GROUP's topic in a throwaway consumer group and apply it through the same "
                    "idempotent rules as the live path: replaying what is already there changes nothing.")
    replay.add_argument("group")
    replay.add_argument("--target", required=True, choices=["online", "offline"])
    replay.add_argument("--from", dest="from_time", default="earliest",
                        help="'earliest' (default) or an ISO-8601 time (records published at/after it)")
    replay.add_argument("--to", dest="to_time", help="ISO-8601 time: stop before records published at/after it")
    replay.add_argument("--no-progress", action="store_true")
    replay.set_defaults(func=_replay)

    rebuild = sub.add_parser(
        "rebuild-online", help="wipe a group's online records and replay its whole topic",
        description="Delete every online record of GROUP and replay its topic from the earliest offset. The "
                    "result equals the state before the wipe as long as the topic retains every record "
                    "(featurestream creates group topics with retention.ms=-1).")
    rebuild.add_argument("group")
    rebuild.add_argument("--no-progress", action="store_true")
    rebuild.set_defaults(func=_rebuild)


def _milliseconds(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected whole milliseconds, got {text!r}") from None
    if not 0 <= value <= 60_000:
        raise argparse.ArgumentTypeError(f"expected 0 to 60000 milliseconds, got {value}")
    return value


def _process(args: argparse.Namespace) -> int:
    from featurestream.stack.workers import announce
    from streams.online.worker import run_processor

    metrics_port = metrics_port_from_args(args)
    config = Config.from_env(catalog_uri=getattr(args, "catalog_uri", None))
    print("featurestream: online processor starting (Ctrl-C stops it)", file=sys.stderr)
    run_processor(config.kafka(), config.require("redis_url"), config.topic_prefix,
                  engine=args.engine, offline_uri=config.offline_uri, metrics_port=metrics_port,
                  metrics_host=args.metrics_host,
                  on_metrics_port=lambda port: announce(config.state_dir, "processor", args.metrics_host, port),
                  batch_size=args.batch_size,
                  batch_within_s=args.batch_wait_ms / 1000.0, apply_in_thread=args.apply_in_thread,
                  log_level=args.log_level, fetch_wait_ms=args.fetch_wait_ms)
    return 0


def _get(args: argparse.Namespace) -> int:
    features = [f.strip() for f in args.features.split(",") if f.strip()] if args.features else None
    with store_from_args(args) as store:
        g = store.describe_feature_group(args.group)
        rid: object = args.record_id
        from schemas.types import ScalarType

        if g.feature(g.record_identifier_name).type == ScalarType.INTEGRAL:
            try:
                rid = int(args.record_id)
            except ValueError as exc:
                raise CliError(f"record identifier of {args.group!r} is Integral; {args.record_id!r} is not an "
                               "integer", status=2) from exc
        found = store.get_record(args.group, rid, features, with_expires_at=args.expires_at)
    if found is None:
        print(f"featurestream: record {args.record_id!r} of {args.group!r} not found (missing, deleted or "
              "expired)", file=sys.stderr)
        return 1
    print_json(found, pretty=False)
    return 0


def _time_ms(text: str | None, what: str) -> int | None:
    if text is None or text == "earliest":
        return None
    try:
        return parse_event_time(text) // 1_000_000
    except ValueError as exc:
        raise CliError(f"{what}: {exc}", status=2) from exc


def _replay(args: argparse.Namespace) -> int:
    with store_from_args(args) as store:
        result = store.replay(args.group, target=args.target, from_ms=_time_ms(args.from_time, "--from"),
                              to_ms=_time_ms(args.to_time, "--to"), progress=not args.no_progress)
    if args.target == "offline":
        # What the table gained, not what was read: the table's offsets decide what was missing.
        print(f"wrote {result.rows_written} rows of {args.group!r} into the offline table ({result.records} records "
              f"read; {result.already_present} already in the table; {result.refused} commit(s) refused because "
              f"a sink wrote those first) in {result.seconds:.1f} s", file=sys.stderr)
        if result.earlier_than_from:
            print(f"note: {result.earlier_than_from} records before --from were missing from the table and were "
                  "written too (the table's offsets must stay contiguous)", file=sys.stderr)
        return 0
    print(f"replayed {result.records} records of {args.group!r} into the {args.target} store in "
          f"{result.seconds:.1f} s", file=sys.stderr)
    return 0


def _rebuild(args: argparse.Namespace) -> int:
    with store_from_args(args) as store:
        removed, result = store.rebuild_online(args.group, progress=not args.no_progress)
    print(f"wiped {removed} online records of {args.group!r}, replayed {result.records} records in "
          f"{result.seconds:.1f} s", file=sys.stderr)
    return 0
