"""Parity: what each store must hold, given the topic, and how a difference is judged. Pure.

The topic is the source of truth; the online store and the offline table are views of it. This
module states, without any I/O, what those views must be, so that the auditor
(``streams/audit.py``) only reads and compares:

- **online**: :func:`fold_online` replays write_if_newer.lua's decision table over one id's
  versions in topic order (the order of ``schemas/ordering.py`` decides which version wins; a
  hard delete removes the record, after which an older put is accepted again, as in the script).
  :func:`online_value` is what GetRecord must then answer at a given time.
- **offline**: :func:`judge_offsets` says which offsets of one partition must be in the table
  exactly once (every offset below the table's recorded position, except records not targeted at
  the offline store and records the sink dead-lettered), and names the missing, doubled and
  unexpected ones. :func:`row_differences` compares one table row with the message it came from.

A difference is only a **mismatch** when the store had every chance to hold the expected value:
a record newer than the consumer group's committed position (online) or the table's recorded
position (offline) is **in flight**, and counted apart; see :func:`judge_online`.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from schemas.ordering import VersionKey, wins

# A record whose expiry is this close to the audit's clock may have expired between the read and
# the comparison (or not yet, on a clock a little behind): judged in flight, not a mismatch.
EXPIRY_MARGIN_NS = 2_000_000_000


class Verdict(StrEnum):
    OK = "ok"
    IN_FLIGHT = "in_flight"          # newer than the consumer's committed position: not yet judged
    DEAD_LETTERED = "dead_lettered"  # differs, and a version of it is in the dead-letter topic
    MISMATCH = "mismatch"            # a real difference


@dataclass(frozen=True, slots=True)
class OnlineState:
    """What write_if_newer.lua leaves under one id: the winning version's key, and either the
    record (a put) or a tombstone (``record`` None: a soft delete, or a put already expired)."""

    key: VersionKey
    record: Mapping[str, Any] | None
    expires_at_ns: int | None = None


class Step(StrEnum):
    """What the script does with one version: keep the current state, store the put, leave a
    tombstone (a soft delete), or remove the key (a hard delete)."""

    KEEP = "keep"
    PUT = "put"
    TOMBSTONE = "tombstone"
    REMOVE = "remove"


def fold_step(current: VersionKey | None, key: VersionKey, op: str, *, hard: bool = False) -> Step:
    """write_if_newer.lua's decision for version ``key`` (``op`` "put" or "delete"; ``hard`` for a
    HardDelete) over the stored version ``current`` (None: no key). The one decision table: both
    :func:`fold_online` and the auditor's cheap fold (``streams/audit_fold.py``) take it from here."""
    if not wins(key, current):
        return Step.KEEP  # stale, duplicate, or a hard delete that is not newer (rejected): no change
    if op == "put":
        return Step.PUT
    return Step.REMOVE if hard else Step.TOMBSTONE  # removed: an older put may be accepted again


def fold_online(state: OnlineState | None, key: VersionKey, op: str, record: Mapping[str, Any] | None,
                expires_at_ns: int | None, *, hard: bool = False) -> OnlineState | None:
    """The state after the script applies one version (``op`` "put" or "delete"; ``hard`` for a
    HardDelete) to ``state`` (None: no key). Versions must be folded in topic order per id."""
    step = fold_step(None if state is None else state.key, key, op, hard=hard)
    if step is Step.KEEP:
        return state
    if step is Step.PUT:
        return OnlineState(key, dict(record or {}), expires_at_ns)
    if step is Step.REMOVE:
        return None
    return OnlineState(key, None, expires_at_ns)


def online_value(state: OnlineState | None, now_ns: int) -> dict[str, Any] | None:
    """What GetRecord must answer for ``state`` at ``now_ns``: the put's non-null features, or None
    (no record, a tombstone, or expired)."""
    if state is None or state.record is None:
        return None
    if state.expires_at_ns is not None and state.expires_at_ns <= now_ns:
        return None
    return {k: v for k, v in state.record.items() if v is not None}


def near_expiry(state: OnlineState | None, now_ns: int) -> bool:
    """Whether ``state`` expires within :data:`EXPIRY_MARGIN_NS` of ``now_ns`` (either side)."""
    return (state is not None and state.expires_at_ns is not None
            and abs(state.expires_at_ns - now_ns) < EXPIRY_MARGIN_NS)


def judge_online(expected: Mapping[str, Any] | None, got: Mapping[str, Any] | None, *, in_flight: bool,
                 dead_lettered: bool) -> Verdict:
    """The verdict on one id: equal is OK whatever else holds; a difference is IN_FLIGHT when a
    version of the id is at or past the committed position of its partition (the store may show
    any version between), DEAD_LETTERED when a version of it was refused and parked, else MISMATCH."""
    if same_values(expected, got):
        return Verdict.OK
    if in_flight:
        return Verdict.IN_FLIGHT
    if dead_lettered:
        return Verdict.DEAD_LETTERED
    return Verdict.MISMATCH


def same_values(a: Any, b: Any) -> bool:
    """Equality for stored values: element-wise for lists and mappings, -0.0 told from 0.0, a bool
    never equal to a number (values are exact, so a difference in sign or kind is a difference)."""
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(same_values(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(same_values(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, float) and isinstance(b, float) and a == 0.0 == b:
        return math.copysign(1.0, a) == math.copysign(1.0, b)
    return bool(a == b)


@dataclass
class OffsetFindings:
    """One partition's offsets judged against the table: ``missing`` (expected, absent), ``doubled``
    (present more than once), ``unexpected`` (present but must not be: not targeted offline,
    dead-lettered, or past the recorded position), ``lost_poison`` (a record the sink could not
    write, yet neither in the table nor in the dead-letter topic)."""

    checked: int = 0
    in_flight: int = 0
    excluded: int = 0
    missing: list[int] = field(default_factory=list)
    doubled: list[int] = field(default_factory=list)
    unexpected: list[int] = field(default_factory=list)
    lost_poison: list[int] = field(default_factory=list)

    @property
    def mismatches(self) -> int:
        return len(self.missing) + len(self.doubled) + len(self.unexpected) + len(self.lost_poison)


def judge_offsets(in_table: Counter[int], *, low: int, recorded: int | None, end: int,
                  not_targeted: Iterable[int], poison: Iterable[int], dead_lettered: Iterable[int]
                  ) -> OffsetFindings:
    """Judge one Kafka partition of one group.

    ``in_table``: how many rows the table holds per offset. ``low``/``end``: the partition's low
    watermark and the end the topic was read to. ``recorded``: the next offset the table's
    snapshot records (None: nothing yet). ``not_targeted``: offsets of valid records not meant for
    the offline store; ``poison``: offsets the sink cannot write (undecodable, or breaking the
    group's schema); ``dead_lettered``: offsets the dead-letter topic holds for this partition.
    Offsets below ``low`` are gone from the topic and not judged.
    """
    out = OffsetFindings()
    upto = low if recorded is None else max(low, recorded)
    out.in_flight = max(0, end - upto)
    skip = set(not_targeted)
    bad = set(poison)
    parked = set(dead_lettered)
    for offset, n in in_table.items():
        if offset < low:
            continue
        if offset >= upto or offset in skip or offset in bad:
            out.unexpected.append(offset)
        elif n > 1:
            out.doubled.append(offset)
    for offset in range(low, upto):
        if offset in skip:
            out.excluded += 1
            continue
        if offset in bad:
            out.excluded += 1
            if offset not in parked:
                out.lost_poison.append(offset)
            continue
        out.checked += 1
        if in_table.get(offset, 0) == 0:
            if offset in parked:
                out.excluded += 1  # the sink refused it at write time (a row it could not build)
                out.checked -= 1
            else:
                out.missing.append(offset)
    out.unexpected.sort()
    out.doubled.sort()
    return out


def offset_ranges(offsets: Iterable[int]) -> list[tuple[int, int]]:
    """Sorted offsets as inclusive ranges, ``[3, 4, 5, 9]`` → ``[(3, 5), (9, 9)]``, to name many briefly."""
    out: list[tuple[int, int]] = []
    for o in sorted(offsets):
        if out and o == out[-1][1] + 1:
            out[-1] = (out[-1][0], o)
        else:
            out.append((o, o))
    return out


def row_differences(row: Mapping[str, Any], op: str, record: Mapping[str, Any] | None, event_time_ns: int,
                    *, event_time_column: str, id_column: str, record_id: Any,
                    row_event_time_ns: int | None) -> dict[str, tuple[Any, Any]]:
    """Features where a table row differs from its message: ``{name: (in the table, on the topic)}``.

    A put's row holds its features; a delete's row holds the id and event time, every other feature
    null and ``is_deleted`` true. The event time is compared to the nanosecond (``row_event_time_ns``).
    """
    diffs: dict[str, tuple[Any, Any]] = {}
    if row_event_time_ns != event_time_ns:
        diffs[event_time_column] = (row_event_time_ns, event_time_ns)
    deleted = op != "put"
    if bool(row.get("is_deleted")) != deleted:
        diffs["is_deleted"] = (row.get("is_deleted"), deleted)
    for name, have in row.items():
        if name in (event_time_column, "is_deleted"):
            continue
        if name == id_column:
            want: Any = record_id if deleted or record is None else record.get(name, record_id)
        else:
            want = None if deleted or record is None else record.get(name)
        if not same_values(have, want):
            diffs[name] = (have, want)
    return diffs
