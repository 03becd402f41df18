"""`featurestream group create|describe|list|update|delete`."""

from __future__ import annotations

import argparse
from pathlib import Path

import orjson

from featurestream.cli import CliError
from featurestream.cli._common import print_json, store_from_args
from schemas.group import FeatureGroup
from schemas.infer import infer_definitions
from schemas.ttl import parse_ttl
from schemas.types import FeatureDefinition
from streams.datafiles import read_frame


def register(sub: argparse._SubParsersAction) -> None:
    group = sub.add_parser("group", help="create, describe, list, update and delete feature groups",
                           description="Manage feature groups (their definitions live in a compacted Kafka topic).")
    gsub = group.add_subparsers(dest="group_command", metavar="ACTION")

    create = gsub.add_parser(
        "create", help="create a feature group and its topic",
        description="Create a feature group from definitions (the reference's FeatureDefinitions JSON form) or "
                    "inferred from a data file (CSV, Parquet, JSON Lines).",
        epilog='FILE.json: [{"FeatureName": "customer_id", "FeatureType": "String"}, {"FeatureName": "tags", '
               '"FeatureType": "String", "CollectionType": "List"}, {"FeatureName": "emb", "FeatureType": '
               '"Fractional", "CollectionType": "Vector", "CollectionConfig": {"VectorConfig": {"Dimension": 8}}}]')
    create.add_argument("name")
    create.add_argument("--record-id", metavar="FEATURE", help="the record identifier feature")
    create.add_argument("--event-time", metavar="FEATURE", help="the event time feature")
    src = create.add_mutually_exclusive_group(required=True)
    src.add_argument("--definitions", type=Path, metavar="FILE.json", help="feature definitions as JSON")
    src.add_argument("--infer-from", type=Path, metavar="DATAFILE", help="infer definitions from a data file")
    src.add_argument("--aggregate", metavar="SOURCE",
                     help="an aggregation group over the events of group SOURCE (with --by and --features)")
    src.add_argument("--from-json", type=Path, metavar="GROUP.json",
                     help='a whole definition as JSON; an aggregation group as {"source": ..., "by": ..., '
                          '"features": ["amount:sum@1h", ...], "allowed_lateness_s": 604800}')
    create.add_argument("--by", metavar="FEATURE", help="aggregation key: a String or Integral feature of SOURCE")
    create.add_argument("--features", nargs="+", metavar="SPEC",
                        help="aggregates: 'amount:sum,count,mean@10m,1h,7d' 'merchant:distinct@1d' "
                             "'amount:last_n(10)' (no window: lifetime)")
    create.add_argument("--allowed-lateness", metavar="DURATION",
                        help="events later than this behind their key's latest are dead-lettered (default 7d)")
    create.add_argument("--no-online", action="store_true", help="disable the online (Redis) store")
    create.add_argument("--no-offline", action="store_true", help="disable the offline (Parquet) store")
    create.add_argument("--partitions", type=int, default=3, help="Kafka partitions of the group's topic (3)")
    create.add_argument("--replication-factor", type=int, default=1,
                        help="replication factor of the group's topic (1 for a single broker)")
    create.add_argument("--retention-ms", type=int, default=-1,
                        help="retention of the group's topic in ms (-1, the default, keeps every record, which "
                             "rebuilding the online and offline stores from the topic relies on)")
    create.add_argument("--ttl", help="time to live of online records: 30s, 15m, 12h, 7d or 2w")
    create.add_argument("--description", default="")
    create.set_defaults(func=_create)

    describe = gsub.add_parser("describe", help="print a group's definition as JSON")
    describe.add_argument("name")
    describe.set_defaults(func=_describe)

    lst = gsub.add_parser("list", help="list feature groups")
    lst.add_argument("--json", action="store_true", help="print JSON instead of a table")
    lst.set_defaults(func=_list)

    update = gsub.add_parser("update", help="add features or change the TTL")
    update.add_argument("name")
    update.add_argument("--add", type=Path, metavar="FILE.json", help="feature definitions to add")
    update.add_argument("--ttl", help="new TTL (30s, 15m, 12h, 7d, 2w) or 'none' to remove it")
    update.set_defaults(func=_update)

    delete = gsub.add_parser("delete", help="delete a group and its topic")
    delete.add_argument("name")
    delete.add_argument("--purge", action="store_true", help="also delete its online and offline data")
    delete.set_defaults(func=_delete)
    group.set_defaults(func=lambda a: (group.print_help(), 2)[1])


def _load_definitions(path: Path) -> list[FeatureDefinition]:
    try:
        raw = orjson.loads(path.read_bytes())
    except FileNotFoundError as exc:
        raise CliError(f"definitions file {str(path)!r} does not exist", status=2) from exc
    except orjson.JSONDecodeError as exc:
        raise CliError(f"definitions file {str(path)!r} is not valid JSON: {exc}", status=2) from exc
    if isinstance(raw, dict) and "FeatureDefinitions" in raw:
        raw = raw["FeatureDefinitions"]
    if not isinstance(raw, list):
        raise CliError(f"definitions file {str(path)!r} must hold a JSON list of "
                       '{"FeatureName": ..., "FeatureType": ...} objects', status=2)
    return [FeatureDefinition.from_api(d) for d in raw]


def _create(args: argparse.Namespace) -> int:
    if args.aggregate is not None or args.from_json is not None:
        return _create_aggregation(args)
    if not args.record_id or not args.event_time:
        raise CliError("--record-id and --event-time are required (except with --aggregate or --from-json)",
                       status=2)
    if args.definitions is not None:
        defs = _load_definitions(args.definitions)
    else:
        frame = read_frame(args.infer_from)
        defs = infer_definitions(frame, record_identifier_name=args.record_id, event_time_name=args.event_time)
    group = FeatureGroup(
        name=args.name, record_identifier_name=args.record_id, event_time_name=args.event_time,
        features=tuple(defs), online_enabled=not args.no_online, offline_enabled=not args.no_offline,
        ttl=parse_ttl(args.ttl) if args.ttl else None, partitions=args.partitions, description=args.description,
        replication_factor=args.replication_factor, retention_ms=args.retention_ms,
    )
    with store_from_args(args) as store:
        created = store.create_feature_group(group)
    print_json(created.to_dict())
    return 0


def _create_aggregation(args: argparse.Namespace) -> int:
    with store_from_args(args) as store:
        if args.from_json is not None:
            try:
                definition = orjson.loads(args.from_json.read_bytes())
            except (FileNotFoundError, orjson.JSONDecodeError) as exc:
                raise CliError(f"definition file {str(args.from_json)!r} cannot be read as JSON: {exc}",
                               status=2) from exc
            if not isinstance(definition, dict):
                raise CliError(f"definition file {str(args.from_json)!r} must hold a JSON object", status=2)
            created = store.create_group_from_json({"name": args.name, **definition}, progress=True)
        else:
            if not args.by or not args.features:
                raise CliError("--aggregate needs --by FEATURE and --features SPEC...", status=2)
            created = store.create_aggregation_group(args.name, args.aggregate, args.by, args.features,
                                                     allowed_lateness=args.allowed_lateness,
                                                     description=args.description, progress=True)
    print_json(created.to_dict())
    return 0


def _describe(args: argparse.Namespace) -> int:
    with store_from_args(args) as store:
        shown = store.describe_feature_group(args.name).to_dict()
        problem = store.aggregation_problem(args.name)
        if problem is not None:  # an aggregation group whose source was deleted (README: aggregation groups)
            shown = {**shown, "status": "SourceDeleted", "failure_reason": problem}
        print_json(shown)
    return 0


def _list(args: argparse.Namespace) -> int:
    with store_from_args(args) as store:
        groups = store.list_feature_groups()
    if args.json:
        print_json([g.to_dict() for g in groups])
        return 0
    if not groups:
        print("no feature groups (create one with `featurestream group create`)")
        return 0
    print(f"{'NAME':<32} {'FEATURES':>8} {'ONLINE':>6} {'OFFLINE':>7}  CREATED")
    for g in groups:
        from schemas.eventtime import format_iso

        print(f"{g.name:<32} {len(g.features):>8} {'yes' if g.online_enabled else 'no':>6} "
              f"{'yes' if g.offline_enabled else 'no':>7}  {format_iso(int(g.creation_time * 1e9))}")
    return 0


def _update(args: argparse.Namespace) -> int:
    from streams.registry import Registry

    adds = _load_definitions(args.add) if args.add else []
    ttl = None
    if args.ttl is not None:
        ttl = Registry.CLEAR_TTL if args.ttl.lower() == "none" else parse_ttl(args.ttl)
    if not adds and ttl is None:
        raise CliError("nothing to update: give --add FILE.json and/or --ttl", status=2)
    with store_from_args(args) as store:
        print_json(store.registry.update(args.name, add_features=adds, ttl=ttl).to_dict())
    return 0


def _delete(args: argparse.Namespace) -> int:
    with store_from_args(args) as store:
        store.delete_feature_group(args.name, purge=args.purge)
    print(f"deleted feature group {args.name!r}" + (" and its data" if args.purge else ""))
    return 0
