"""`featurestream deadletter list | redrive`: see what was dead-lettered, and re-publish what passes now."""

from __future__ import annotations

import argparse
import sys

from featurestream.cli._common import print_json, store_from_args

_LIST_HELP = (
    "Print every dead letter: messages a worker could not apply (bytes that are not a featurestream record, "
    "a record of a group the registry does not know, a record its group's definition refuses), parked on the "
    "dead-letter topic <prefix>._deadletter with the reason. One line each: when it was parked (the dead "
    "letter's Kafka timestamp), the group, the source record's partition and offset in the group's topic, the "
    "stage that parked it (online: the processor, offline: the sink; one record can be parked by both) and "
    "the reason. Reads the topic up to its end as of the start of the command, then stops.")
_REDRIVE_HELP = (
    "Re-publish to its group's topic every dead-lettered record that passes now: decoded, then validated "
    "against the group's current definition by the same validator as `featurestream put`. The record keeps "
    "its key, id, event time, values and fs-api-invocation-time, so both stores treat it like any record, and "
    "is stamped with the group's current fs-schema-version. A record parked by both stages is re-published "
    "once. Prints, per dead letter, `redriven` (and where the record landed) or `failing` and why (for "
    "example, the group still does not exist, or the bytes are not a record). Running it again is harmless: "
    "what was redriven is recorded in the compacted topic <prefix>._deadletter-redriven and never re-published, "
    "even if a redrive was killed midway (see the README, \"Dead letters\"). Run one redrive at a time.")


def register(sub: argparse._SubParsersAction) -> None:
    dl = sub.add_parser("deadletter", help="list dead letters and redrive them",
                        description="Dead letters: messages the processor or the sink could not apply, parked "
                                    "with the reason. `list` shows them; `redrive` re-publishes those that "
                                    "pass now.")
    dsub = dl.add_subparsers(dest="deadletter_command", metavar="ACTION")

    lst = dsub.add_parser("list", help="print the dead letters with their reasons", description=_LIST_HELP)
    lst.add_argument("--group", metavar="G", help="only the dead letters of feature group G")
    lst.add_argument("--since", metavar="T",
                     help="only those parked at or after T: ISO-8601 UTC (2026-10-02T12:00:00Z) or a duration "
                          "back from now (30s, 30m, 1h, 7d, 2w)")
    lst.add_argument("--json", action="store_true", help="print a JSON array instead of a table")
    lst.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    lst.set_defaults(func=_list)

    rd = dsub.add_parser("redrive", help="re-publish the dead-lettered records that pass validation now",
                         description=_REDRIVE_HELP)
    rd.add_argument("--group", metavar="G", help="only the dead letters of feature group G")
    rd.add_argument("--dry-run", action="store_true", help="report what would be redriven; publish nothing")
    rd.add_argument("--json", action="store_true",
                    help="print a JSON object: summary counts and every dead letter with its status "
                         "(redriven, would-redrive, failing, not-needed, already-redriven)")
    rd.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    rd.set_defaults(func=_redrive)
    dl.set_defaults(func=lambda a: (dl.print_help(), 2)[1])


def _where(d: dict) -> str:
    return "-" if d["source_partition"] is None else f"{d['source_partition']}@{d['source_offset']}"


def _list(args: argparse.Namespace) -> int:
    with store_from_args(args) as store:
        found = store.dead_letters(args.group, since=args.since, progress=not args.no_progress)
    rows = [dl.to_dict() for dl in found]
    if args.json:
        print_json(rows)
        return 0
    if not rows:
        print("no dead letters" + (f" of {args.group}" if args.group else "") +
              (f" since {args.since}" if args.since else ""))
        return 0
    print(f"{'TIME':<24}  {'GROUP':<24} {'PART@OFFSET':<12} {'STAGE':<8} REASON")
    for d in rows:
        group = d["group"] or d["source_topic"] or "-"
        print(f"{d['time']:<24}  {group:<24} {_where(d):<12} {d['stage']:<8} {d['reason']}")
    print(f"{len(rows)} dead letter(s)", file=sys.stderr)
    return 0


def _redrive(args: argparse.Namespace) -> int:
    from streams.redrive import ALREADY, REDRIVEN

    with store_from_args(args) as store:
        report = store.redrive(args.group, dry_run=args.dry_run, progress=not args.no_progress)
    if args.json:
        statuses = ("redriven", "would-redrive", "failing", "not-needed", "already-redriven")
        print_json({"dry_run": report.dry_run, "published": report.published,
                    "counts": {s: report.count(s) for s in statuses},
                    "dead_letters": [o.to_dict() for o in report.outcomes]})
        return 0
    if not report.outcomes:
        print("no dead letters" + (f" of {args.group}" if args.group else ""))
        return 0
    for o in report.outcomes:
        if o.status == ALREADY:
            continue  # counted in the summary; --json lists them
        d = o.dead_letter.to_dict()
        group = d["group"] or d["source_topic"] or "-"
        detail = (f"-> partition {o.redriven_to[0]}, offset {o.redriven_to[1]}"
                  if o.status == REDRIVEN and o.redriven_to else (o.reason or ""))
        print(f"{o.status:<14} {group:<24} {_where(d):<12} {d['stage']:<8} {detail}")
    print(report.summary(), file=sys.stderr)
    return 0
