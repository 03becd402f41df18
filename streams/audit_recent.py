"""Which ids an audit checks first: those that changed and were not judged since, newest first.

A lossy failover loses the last writes before it, so the auditor gives part of each sample to ids
that changed recently. Such an id may not get a verdict at its first check: the processor commits
its offsets about once a second, and a pass within that second judges a just-applied (and maybe
just-lost) version *in flight*. So an id stays here until it gets a real verdict (equal, mismatch,
dead-lettered): ids judged in flight are retried first at the next pass, then the changed ids
closest to their partition's end (the likeliest lost), then a random few of the other changed ids
(so older unchecked ones are not starved). Both sets are bounded: past the limits, the changed ids
farthest from their partition's end and the oldest retries are dropped, left to the uniform sample.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable, Container


class RecentIds:
    """Ids changed since their last verdict, and ids judged in flight; see the module docstring."""

    def __init__(self, *, changed_limit: int = 10_000, retry_limit: int = 1_000) -> None:
        if changed_limit < 1 or retry_limit < 1:
            raise ValueError(f"RecentIds limits must be positive; got changed_limit={changed_limit}, "
                             f"retry_limit={retry_limit}")
        self.changed_limit = changed_limit
        self.retry_limit = retry_limit
        self._changed: set[str] = set()
        self._retry: dict[str, None] = {}   # insertion order: oldest first

    def __len__(self) -> int:
        return len(self._changed | self._retry.keys())

    def changed(self, rid: str) -> None:
        """``rid`` has a new version (called per folded record: keep it cheap)."""
        self._changed.add(rid)

    def judged(self, rid: str, *, in_flight: bool) -> None:
        """``rid`` was checked: a real verdict ends its stay; in flight, it is retried at the next pass."""
        self._changed.discard(rid)
        self._retry.pop(rid, None)
        if in_flight:
            self._retry[rid] = None
            if len(self._retry) > self.retry_limit:
                del self._retry[next(iter(self._retry))]

    def pick(self, n: int, rng: random.Random, known: Container[str], age: Callable[[str], int]) -> list[str]:
        """Up to ``n`` ids among ``known``: retries first, then the changed ids of least ``age`` (records
        published after their last version), half of what is left, then random changed ids. Picking does
        not forget an id: :meth:`judged` does."""
        if len(self._changed) > self.changed_limit:
            self._changed = set(heapq.nsmallest(self.changed_limit, self._changed, key=age))
        chosen = [r for r in self._retry if r in known][:n]
        left = n - len(chosen)
        if left <= 0:
            return chosen
        picked = set(chosen)
        candidates = [r for r in self._changed if r not in picked and r in known]
        newest = heapq.nsmallest((left + 1) // 2, candidates, key=age)
        chosen += newest
        taken = set(newest)
        rest = [r for r in candidates if r not in taken]
        chosen += rng.sample(rest, min(left - len(newest), len(rest)))
        return chosen
