"""What an audit found: per group and store, counts and the real mismatches, as text or JSON."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Mismatch:
    """One real difference between a store and the topic.

    ``kind``: "value" (online: GetRecord differs from the topic's latest; offline: a row differs from
    its message), "missing" (offsets absent from the table), "doubled", "unexpected", "lost_poison".
    """

    store: str
    group: str
    kind: str
    record_id: str | None = None
    partition: int | None = None
    offsets: list[tuple[int, int]] = field(default_factory=list)  # inclusive ranges
    in_store: Any = None
    on_topic: Any = None
    version: str | None = None  # the topic version's "partition:offset"

    def describe(self) -> str:
        where = f"record {self.record_id!r}" if self.record_id is not None else f"partition {self.partition}"
        if self.offsets:
            ranges = ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in self.offsets)
            return f"{self.store} {self.group}: {where}: {self.kind} offsets {ranges}"
        return (f"{self.store} {self.group}: {where}: {self.kind}: the store has {self.in_store!r:.300}, the "
                f"topic's {'latest ' if self.store == 'online' else ''}version{' at ' + self.version if self.version else ''}"
                f" is {self.on_topic!r:.300}")


@dataclass
class StoreReport:
    """One store of one group: how many things were checked and what each verdict counted."""

    store: str
    checked: int = 0
    ok: int = 0
    in_flight: int = 0
    dead_lettered: int = 0
    excluded: int = 0          # offline: offsets legitimately absent (not targeted, dead-lettered)
    rows_compared: int = 0     # offline: rows compared by value
    mismatches: list[Mismatch] = field(default_factory=list)
    note: str = ""             # why nothing was judged (store rebuilding, no table yet)

    @property
    def mismatch_count(self) -> int:
        return len(self.mismatches)


@dataclass
class GroupReport:
    group: str
    online: StoreReport | None = None
    offline: StoreReport | None = None

    def stores(self) -> list[StoreReport]:
        return [s for s in (self.online, self.offline) if s is not None]

    @property
    def mismatch_count(self) -> int:
        return sum(s.mismatch_count for s in self.stores())


def to_json(reports: list[GroupReport]) -> dict[str, Any]:
    """The machine-readable form (``featurestream audit --json``)."""
    return {"groups": [{"group": r.group, **{s.store: {**asdict(s), "mismatch_count": s.mismatch_count}
                                               for s in r.stores()}} for r in reports],
            "mismatches": sum(r.mismatch_count for r in reports)}


def to_text(reports: list[GroupReport], *, show: int = 20) -> str:
    """A table per group, then up to ``show`` mismatches of each store described."""
    lines: list[str] = []
    for r in reports:
        lines.append(f"group {r.group}")
        lines.append(f"  {'store':<8} {'checked':>8} {'ok':>8} {'in flight':>10} {'dead-lettered':>14} "
                     f"{'excluded':>9} {'mismatches':>11}")
        for s in r.stores():
            lines.append(f"  {s.store:<8} {s.checked:>8} {s.ok:>8} {s.in_flight:>10} {s.dead_lettered:>14} "
                         f"{s.excluded:>9} {s.mismatch_count:>11}" + (f"   ({s.note})" if s.note else ""))
        for s in r.stores():
            for m in s.mismatches[:show]:
                lines.append(f"  ! {m.describe()}")
            if s.mismatch_count > show:
                lines.append(f"  ! ... and {s.mismatch_count - show} more {s.store} mismatches (--json lists all)")
    total = sum(r.mismatch_count for r in reports)
    lines.append(f"{total} mismatch{'es' if total != 1 else ''} in {len(reports)} group(s)")
    return "\n".join(lines)
