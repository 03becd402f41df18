"""Listing dead letters and redriving them (``featurestream deadletter list | redrive``).

``list_dead_letters`` reads the dead-letter topic up to its end as of the start of the call.
``redrive`` re-publishes to its group's topic every parked record that now passes the door's
validation (decode, then the SDK put's validator against the group's current definition),
keeping its identity (key, id, event time, record, ``fs-api-invocation-time``) and stamping the
group's current ``fs-schema-version``. It is idempotent, crash included: see
``streams/redrive_plan.py`` for the markers that make a second run find nothing left to do.
One redrive at a time per topic prefix: two running at once could both publish a record.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

from schemas.errors import RecordValidationError, ServiceUnavailableError, WireFormatError
from schemas.group import FeatureGroup
from schemas.messages import Message
from schemas.names import deadletter_topic, redriven_topic
from schemas.wire import decode
from streams.admin import admin_client, ensure_topic
from streams.deadletter_records import DeadLetter, dead_letter_from, matches
from streams.kafka_client import KafkaTarget
from streams.publisher import Publisher
from streams.redrive_plan import (
    DONE,
    PUBLISHING,
    Marker,
    Markers,
    SourcePlan,
    encode_marker,
    encode_redriven,
    fold_markers,
    marker_key,
    plan,
    redrive_of,
    revalidate,
)
from streams.topic_reader import end_offsets, read_to_end

# Outcomes of one dead letter in a redrive report.
REDRIVEN = "redriven"                # re-published now (or found published by an interrupted run)
WOULD_REDRIVE = "would-redrive"      # --dry-run: would be re-published
ALREADY = "already-redriven"         # an earlier redrive did it
NOT_NEEDED = "not-needed"            # passes, but no store that parked it needs it (disabled, not targeted)
FAILING = "failing"                  # still does not pass; ``reason`` says why

GroupLookup = Callable[[str], FeatureGroup | None]


@dataclass(frozen=True, slots=True)
class RedriveOutcome:
    dead_letter: DeadLetter
    status: str
    reason: str | None = None
    redriven_to: tuple[int, int] | None = None  # (partition, offset) in the group's topic

    def to_dict(self) -> dict[str, object]:
        return {**self.dead_letter.to_dict(), "status": self.status, "failure": self.reason,
                "redriven_to": list(self.redriven_to) if self.redriven_to else None}


@dataclass
class RedriveReport:
    outcomes: list[RedriveOutcome] = field(default_factory=list)
    dry_run: bool = False
    published: int = 0  # records re-published by this run (one per source record, whatever its dead letters)

    def count(self, status: str) -> int:
        return sum(1 for o in self.outcomes if o.status == status)

    def summary(self) -> str:
        parts = [f"{self.count(s)} {s}" for s in (REDRIVEN, WOULD_REDRIVE, FAILING, NOT_NEEDED, ALREADY)
                 if self.count(s)]
        verb = "would re-publish" if self.dry_run else "re-published"
        return (f"{len(self.outcomes)} dead letter(s): {', '.join(parts) or 'none'}; {verb} "
                f"{self.published if not self.dry_run else self.count(WOULD_REDRIVE)} record(s)")


def list_dead_letters(bootstrap: KafkaTarget, prefix: str, *, group: str | None = None, since_ms: int | None = None,
                      progress: bool = True, timeout_s: float = 10.0) -> list[DeadLetter] | None:
    """The dead letters (optionally of one group, parked at or after ``since_ms``), oldest first;
    None when the dead-letter topic does not exist yet (nothing was ever parked)."""
    topic = deadletter_topic(prefix)
    if end_offsets(bootstrap, topic, timeout_s=timeout_s) is None:
        return None
    out = [dead_letter_from(raw, prefix)
           for raw in read_to_end(bootstrap, topic, timeout_s=timeout_s, progress=progress, what="dead letters")]
    return sorted((dl for dl in out if matches(dl, group=group, since_ms=since_ms)),
                  key=lambda dl: (dl.timestamp_ms, dl.partition, dl.offset))


def read_markers(bootstrap: KafkaTarget, prefix: str, *, timeout_s: float = 10.0) -> Markers:
    return fold_markers((raw.key, raw.value) for raw in read_to_end(bootstrap, redriven_topic(prefix),
                                                                   timeout_s=timeout_s))


def redrive(bootstrap: KafkaTarget, prefix: str, publisher: Publisher, lookup: GroupLookup, *,
            group: str | None = None, dry_run: bool = False, progress: bool = True,
            timeout_s: float = 10.0) -> RedriveReport | None:
    """Re-publish what passes now; report every dead letter (of ``group``, or all). None when the
    dead-letter topic does not exist yet."""
    dead = list_dead_letters(bootstrap, prefix, group=group, progress=progress, timeout_s=timeout_s)
    if dead is None:
        return None
    report = RedriveReport(dry_run=dry_run)
    plans, unusable = plan(dead, read_markers(bootstrap, prefix, timeout_s=timeout_s))
    for dl in unusable:
        why = ("it lacks the fs-dlq-source-* headers naming its source record" if dl.source is None else
               f"its stage {dl.stage!r} names no store, so which store missed it is unknown")
        report.outcomes.append(RedriveOutcome(dl, FAILING, why))
    marks = _Marks(bootstrap, prefix, publisher, dry_run)
    _settle_in_doubt(bootstrap, plans, marks, timeout_s)
    groups: dict[str, FeatureGroup | None] = {}
    todo: list[tuple[SourcePlan, Message, list[DeadLetter]]] = []
    for p in plans:
        pending_dls = [dl for dl in p.dead_letters if dl.store not in p.done]
        report.outcomes += [RedriveOutcome(dl, ALREADY, redriven_to=p.done[dl.store].redriven_to)
                            for dl in p.dead_letters if dl.store in p.done]
        if not pending_dls:
            continue
        verdict = _judge(p, groups, lookup)
        if isinstance(verdict, str):
            report.outcomes += [RedriveOutcome(dl, FAILING, verdict) for dl in pending_dls]
        elif verdict is None:
            marks.done(p, p.pending, None)
            report.outcomes += [RedriveOutcome(dl, NOT_NEEDED, "no store that parked it needs it now (the group "
                                               "disables it, or the record does not target it)")
                                for dl in pending_dls]
        else:
            todo.append((p, verdict, pending_dls))
    if dry_run:
        report.outcomes += [RedriveOutcome(dl, WOULD_REDRIVE) for _, _, dls in todo for dl in dls]
    else:
        landed = _publish(bootstrap, publisher, [(p, msg) for p, msg, _ in todo], marks, timeout_s)
        for (_, _, dls), coords in zip(todo, landed, strict=True):
            report.published += 1
            report.outcomes += [RedriveOutcome(dl, REDRIVEN, redriven_to=coords) for dl in dls]
    marks.flush()
    report.outcomes.sort(key=lambda o: (o.dead_letter.timestamp_ms, o.dead_letter.partition, o.dead_letter.offset))
    return report


def _judge(p: SourcePlan, groups: dict[str, FeatureGroup | None], lookup: GroupLookup) -> Message | str | None:
    """The message to re-publish, None if no pending store needs it, or why it still fails."""
    dl = p.first
    if dl.group is None:
        return f"its source topic {p.source.topic!r} is not a feature group's topic"
    if dl.group not in groups:
        groups[dl.group] = lookup(dl.group)
    group = groups[dl.group]
    if group is None:
        return f"feature group {dl.group!r} still does not exist in the registry"
    try:
        return revalidate(group, decode(dl.key, dl.value, dl.headers), p.pending)
    except (WireFormatError, RecordValidationError) as exc:
        return str(exc)


class _Marks:
    """Queues markers for the compacted redriven topic and writes them on ``flush`` (never in a dry run).

    A source record with dead letters is only ever one of a group's topic (``dl.group`` is set), so
    its source topic is the topic it is re-published to."""

    def __init__(self, bootstrap: KafkaTarget, prefix: str, publisher: Publisher, dry_run: bool) -> None:
        self.topic = redriven_topic(prefix)
        self.publisher = publisher
        self.dry_run = dry_run
        self.queued: list[tuple[bytes, bytes, None]] = []
        if not dry_run:
            ensure_topic(admin_client(bootstrap), self.topic, partitions=1, replication_factor=1,
                         config={"cleanup.policy": "compact"})

    def publishing(self, p: SourcePlan, scan_from: dict[int, int]) -> None:
        marker = Marker(PUBLISHING, p.source.topic, scan_from, at_ms=_now_ms())
        self.queued += [(marker_key(p.source, s), encode_marker(marker), None) for s in sorted(p.pending)]

    def done(self, p: SourcePlan, stores: frozenset[str], coords: tuple[int, int] | None) -> None:
        marker = Marker(DONE, p.source.topic, redriven_to=coords, at_ms=_now_ms())
        self.queued += [(marker_key(p.source, s), encode_marker(marker), None) for s in sorted(stores)]
        for s in stores:
            p.done[s] = marker

    def flush(self) -> None:
        """Write the queued markers and wait until Kafka acknowledged every one."""
        if self.queued and not self.dry_run:
            self.publisher.publish_many(self.topic, self.queued).wait(self.publisher)
        self.queued = []


def _publish(bootstrap: KafkaTarget, publisher: Publisher, todo: Sequence[tuple[SourcePlan, Message]],
             marks: _Marks, timeout_s: float) -> list[tuple[int, int]]:
    """``publishing`` markers (with each topic's end offsets), then the records, then ``done``
    markers; returns where each record landed."""
    if not todo:
        return []
    ends: dict[str, dict[int, int]] = {}
    for p, _ in todo:
        if p.source.topic not in ends:
            watermarks = end_offsets(bootstrap, p.source.topic, timeout_s=timeout_s) or {}
            ends[p.source.topic] = {part: high for part, (_, high) in watermarks.items()}
        marks.publishing(p, ends[p.source.topic])
    marks.flush()  # acknowledged before any record is sent: a crash from here on is recoverable
    futures: list[Future] = []
    for p, msg in todo:
        key, value, headers = encode_redriven(msg, p.source)
        futures.append(publisher.publish(p.source.topic, key, value, headers))
    wait = publisher.timeout_s + 15.0
    landed: list[tuple[int, int]] = []
    try:
        for f in futures:
            partition, offset = f.result(timeout=wait)
            landed.append((partition, offset))
    except TimeoutError as exc:
        raise ServiceUnavailableError(f"Kafka did not acknowledge re-published records within {wait:g} s; "
                                      "run redrive again: it finds what was published and sends the rest") from exc
    finally:
        # What landed is recorded even when a later record failed; the rest stay in doubt.
        for (p, _), coords in zip(todo, landed, strict=False):
            marks.done(p, p.pending, coords)
        marks.flush()
    return landed


def _settle_in_doubt(bootstrap: KafkaTarget, plans: Sequence[SourcePlan], marks: _Marks, timeout_s: float) -> None:
    """For records an interrupted redrive may have published (a ``publishing`` marker without its
    ``done``), read their group topic from the end offsets the marker recorded and look for a record
    naming them in ``fs-redrive-of``. Found: it was published; mark it done where it landed."""
    doubtful = {p.source: p for p in plans if p.in_doubt.keys() & p.pending}
    starts: dict[str, dict[int, int]] = {}
    for p in doubtful.values():
        for m in p.in_doubt.values():
            start = starts.setdefault(m.topic, dict(m.scan_from))
            for part, off in m.scan_from.items():
                start[part] = min(start.get(part, off), off)
    for topic, start in starts.items():
        for raw in read_to_end(bootstrap, topic, start=start, timeout_s=timeout_s):
            source = redrive_of(raw.headers)
            p = doubtful.get(source) if source is not None else None
            if p is not None:
                marks.done(p, p.in_doubt.keys() & p.pending, (raw.partition, raw.offset))
    marks.flush()


def _now_ms() -> int:
    return time.time_ns() // 1_000_000

