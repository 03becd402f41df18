"""The Iceberg commit-and-retry loop, written once (the sink's appends and compaction's rewrites).

A commit is a compare-and-swap on the table's metadata location: a writer that lost the race gets
``CommitFailedException`` and nothing of its commit landed. So the whole step (reload the table, check
what it must check against the fresh metadata, commit) runs again, after a short jittered wait so that
writers that conflicted together do not retry together. Any other exception is the step's to handle.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import TypeVar

from pyiceberg.exceptions import CommitFailedException
from pyiceberg.table import Table

from schemas.backoff import backoff_delays

T = TypeVar("T")
# Conflicts resolve in a catalog round trip or two: 50 ms doubling up to 2 s (each stretched by [1, 2)).
FIRST_WAIT_S = 0.05
MAX_WAIT_S = 2.0


class CommitConflictsExhausted(Exception):
    """Every attempt conflicted with another writer's commit; the caller cleans up and says what failed."""

    def __init__(self, attempts: int) -> None:
        super().__init__(f"{attempts} commit attempts in a row conflicted with other writers")
        self.attempts = attempts


def commit_with_retry(reload: Callable[[], Table], step: Callable[[Table], T], *, attempts: int,
                      first: Table | None = None,
                      on_conflict: Callable[[Table, CommitFailedException, int], None] | None = None,
                      sleep: Callable[[float], None] = time.sleep,
                      rand: Callable[[], float] = random.random) -> T:
    """``step(table)`` on fresh metadata until it does not conflict: its result, or
    CommitConflictsExhausted after ``attempts`` conflicts.

    ``first``: a table loaded a moment ago, used for the first attempt instead of ``reload()``.
    ``on_conflict(table, exc, attempt)`` runs after each conflict (attempt counted from 0), before the wait.
    """
    delays = backoff_delays(FIRST_WAIT_S, MAX_WAIT_S, jitter=True, rand=rand)
    for attempt in range(attempts):
        table = first if attempt == 0 and first is not None else reload()
        try:
            return step(table)
        except CommitFailedException as exc:
            if on_conflict is not None:
                on_conflict(table, exc, attempt)
            sleep(next(delays))
    raise CommitConflictsExhausted(attempts)
