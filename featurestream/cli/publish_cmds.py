"""`featurestream put | delete | ingest | tail`: publishing and consuming from the shell."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import orjson

from featurestream.cli import CliError
from featurestream.cli._common import add_delivery_timeout, parse_json_arg, store_from_args
from schemas.types import ScalarType
from streams.datafiles import CellError, RecordReader
from streams.ingest import IngestIncompleteError


def register(sub: argparse._SubParsersAction) -> None:
    put = sub.add_parser("put", help="publish one record",
                         description="Validate one record (a JSON object of feature name to value) and publish it; "
                                     "returns once Kafka acknowledged it.")
    put.add_argument("group")
    put.add_argument("record", help="the record as JSON, e.g. '{\"customer_id\": \"c1\", ...}'")
    put.add_argument("--target-stores", help="comma-separated: OnlineStore,OfflineStore (default both)")
    put.add_argument("--ttl", help="per-record TTL overriding the group's: 30s, 15m, 12h, 7d, 2w")
    put.add_argument("--wait-online", action="store_true", help="wait until the record is readable online")
    add_delivery_timeout(put)
    put.set_defaults(func=_put)

    delete = sub.add_parser("delete", help="publish a delete of one record")
    delete.add_argument("group")
    delete.add_argument("record_id")
    delete.add_argument("--event-time", required=True, help="the delete's event time (ISO-8601 UTC or epoch s)")
    delete.add_argument("--hard", action="store_true", help="HardDelete (default: SoftDelete)")
    delete.add_argument("--target-stores", help="comma-separated: OnlineStore,OfflineStore (default both)")
    add_delivery_timeout(delete)
    delete.set_defaults(func=_delete)

    ingest = sub.add_parser(
        "ingest", help="validate and publish a CSV, Parquet or JSON Lines file",
        description="Validate every row of FILE against the group's definition and publish the valid ones. "
                    "Rejected rows are summarised (and written with --rejects). With --strict nothing is "
                    "published unless every row is valid. Rows Kafka did not acknowledge within the delivery "
                    "timeout are listed too (\"unacknowledged\": true in the --rejects file); run the same command "
                    "again with --resume REJECTS to publish exactly those, none twice. "
                    "Exit status: 0 all published, 1 some rejected or not acknowledged.")
    ingest.add_argument("group")
    ingest.add_argument("file", type=Path)
    ingest.add_argument("--format", choices=["csv", "parquet", "jsonl"], help="default: from the extension")
    ingest.add_argument("--workers", type=int, help="worker processes for validation/encoding (default: auto)")
    ingest.add_argument("--strict", action="store_true", help="publish nothing if any row is invalid")
    ingest.add_argument("--rejects", type=Path, metavar="FILE", help="write rejected and unacknowledged rows as JSON Lines")
    ingest.add_argument("--no-progress", action="store_true", help="no progress bar")
    ingest.add_argument("--resume", type=Path, metavar="REJECTS",
                        help="the --rejects file of an ingest of this FILE that Kafka did not fully acknowledge: "
                             "publish only its unacknowledged rows, skipping any the broker kept anyway")
    add_delivery_timeout(ingest)
    ingest.set_defaults(func=_ingest)

    tail = sub.add_parser("tail", help="print a group's records as JSON Lines",
                          description="Print records of a group's topic as JSON Lines (one decoded message each), "
                                      "following new ones until --max or Ctrl-C.")
    tail.add_argument("group")
    start = tail.add_mutually_exclusive_group()
    start.add_argument("--from-beginning", action="store_true", help="start at the oldest record")
    start.add_argument("--from", dest="from_time", metavar="ISO-TIME",
                       help="start at the first record published at or after this time")
    tail.add_argument("--max", type=int, help="stop after N records")
    tail.add_argument("--idle-timeout", type=float, help="stop after this many seconds without a record")
    tail.add_argument("--consumer-group", help="consume as a member of this consumer group (commits offsets)")
    tail.set_defaults(func=_tail)


def _stores(text: str | None) -> list[str] | None:
    return [s.strip() for s in text.split(",") if s.strip()] if text else None


def _put(args: argparse.Namespace) -> int:
    record = parse_json_arg(args.record, "the record")
    if not isinstance(record, dict):
        raise CliError(f"the record must be a JSON object of feature name to value, not {type(record).__name__}",
                       status=2)
    with store_from_args(args) as store:
        # Read again with the group's types, as a JSON Lines file is: orjson alone turns
        # 9007199254740993.0 for an Integral into 9007199254740992.
        try:
            record = RecordReader.for_group(store.describe_feature_group(args.group)).loads(args.record.encode())
        except CellError as exc:
            raise CliError(f"the record is invalid: {exc}", status=2) from None
        partition, offset = store.put_record(args.group, record, target_stores=_stores(args.target_stores),
                                             ttl=args.ttl, wait_online=args.wait_online)
    print(f"published to {args.group} (partition {partition}, offset {offset})", file=sys.stderr)
    return 0


def _delete(args: argparse.Namespace) -> int:
    with store_from_args(args) as store:
        g = store.describe_feature_group(args.group)
        rid: object = args.record_id
        if g.feature(g.record_identifier_name).type == ScalarType.INTEGRAL:
            rid = _int_or_text(args.record_id)
        et: object = args.event_time
        try:
            et = float(args.event_time)
        except ValueError:
            pass
        partition, offset = store.delete_record(args.group, rid, et, mode="hard" if args.hard else "soft",
                                                target_stores=_stores(args.target_stores))
    print(f"published {'hard' if args.hard else 'soft'} delete of {args.record_id!r} to {args.group} "
          f"(partition {partition}, offset {offset})", file=sys.stderr)
    return 0


def _int_or_text(text: str) -> object:
    try:
        return int(text)
    except ValueError:
        return text


def _ingest(args: argparse.Namespace) -> int:
    with store_from_args(args) as store:
        only, token = _unacknowledged_rows(args.resume) if args.resume else (None, None)
        try:
            result, rows = store.ingest_file(args.group, args.file, fmt=args.format, max_workers=args.workers,
                                             progress=not args.no_progress, strict=args.strict, only=only,
                                             resume_token=token)
        except IngestIncompleteError as exc:
            result, rows = exc.result, exc.rows  # type: ignore[attr-defined]
    print(result.summary(), file=sys.stderr)
    if result.ok:
        return 0
    problems = sorted(result.rejected + result.unacknowledged, key=lambda r: r.index)
    for rej in problems[:10]:
        where = f"{rows.unit} {rej.line}" if rej.line is not None else f"row {rej.index}"
        print(f"  {where}: {rej.reason}", file=sys.stderr)
    if len(problems) > 10:
        print(f"  ... and {len(problems) - 10} more", file=sys.stderr)
    if args.rejects:
        _write_rejects(args.rejects, result, rows)
        print(f"  rejected and unacknowledged rows written to {str(args.rejects)!r}", file=sys.stderr)
    return 1


def _unacknowledged_rows(path: Path) -> tuple[set[int], int]:
    """The FILE row indexes a --rejects file marks unacknowledged, and their ingest's resume token."""
    rows: set[int] = set()
    tokens: set[int] = set()
    try:
        lines = path.read_bytes().splitlines()
    except OSError as exc:
        raise CliError(f"cannot read --resume file {str(path)!r}: {exc.strerror or exc}", status=2) from None
    for n, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            line = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise CliError(f"{path}:{n} is not a JSON line of a --rejects file: {exc}", status=2) from None
        if isinstance(line, dict) and line.get("unacknowledged") is True:
            index, token = line.get("index"), line.get("resume_token")
            if not isinstance(index, int) or index < 0 or not isinstance(token, int):
                raise CliError(f"{path}:{n}: an unacknowledged row needs a non-negative \"index\" (its row in "
                               "FILE) and an integer \"resume_token\"; is this a --rejects file of ingest?",
                               status=2)
            rows.add(index)
            tokens.add(token)
    if not rows:
        raise CliError(f"{path} marks no row as unacknowledged: nothing to resume", status=2)
    if len(tokens) > 1:
        raise CliError(f"{path} mixes rows of {len(tokens)} different ingests (resume tokens "
                       f"{sorted(tokens)}); resume one ingest at a time", status=2)
    return rows, tokens.pop()


def _write_rejects(path: Path, result: object, rows: object) -> None:
    """One JSON line per row not published: where it is, why, and the row as read and as written. Rows
    Kafka did not acknowledge carry ``"unacknowledged": true`` and the token ``--resume`` needs."""
    unacked = {rej.index: rej for rej in result.unacknowledged}  # type: ignore[attr-defined]
    by_index = {rej.index: rej for rej in result.rejected}  # type: ignore[attr-defined]
    by_index.update(unacked)
    with path.open("wb") as out:
        # The file is read again for just these rows: ingest kept none of it in memory.
        for index, record, text in rows.rows_at(set(by_index)):  # type: ignore[attr-defined]
            line = {**by_index[index].to_dict(), "row": record}
            if text is not None:
                line["text"] = text
            if index in unacked:
                line["unacknowledged"] = True
                line["resume_token"] = result.api_invocation_time_ns  # type: ignore[attr-defined]
            out.write(orjson.dumps(line, default=str, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n")


def _tail(args: argparse.Namespace) -> int:
    start: object = "end"
    if args.from_beginning:
        start = "beginning"
    elif args.from_time:
        start = args.from_time
    out = sys.stdout
    with store_from_args(args) as store:
        for rec in store.stream(args.group, start=start, consumer_group=args.consumer_group,
                                max_records=args.max, idle_timeout_s=args.idle_timeout):
            out.write(orjson.dumps(_tail_row(rec)).decode() + "\n")
            out.flush()
    return 0


def _tail_row(rec: object) -> dict:
    from schemas.messages import PutMessage

    msg = rec.message  # type: ignore[attr-defined]
    row: dict = {"partition": rec.partition, "offset": rec.offset}  # type: ignore[attr-defined]
    if msg is None:
        row["error"] = rec.error  # type: ignore[attr-defined]
        return row
    row["op"] = msg.op
    row["id"] = msg.id
    if isinstance(msg, PutMessage):
        row["record"] = msg.record
        row["ttl_seconds"] = msg.ttl_seconds
    else:
        row["event_time"] = msg.event_time
        row["mode"] = msg.mode
    row["target_stores"] = sorted(msg.target_stores)
    return row
