"""The one backoff schedule (schemas.backoff) and the one Iceberg commit-retry loop (sinks.offline.commit_retry)."""

from __future__ import annotations

from itertools import islice

import pytest
from pyiceberg.exceptions import CommitFailedException

from schemas.backoff import Backoff, backoff_delays
from sinks.offline.commit_retry import CommitConflictsExhausted, commit_with_retry


def test_waits_double_from_the_first_up_to_the_cap() -> None:
    assert list(islice(backoff_delays(0.5, 10.0), 7)) == [0.5, 1, 2, 4, 8, 10, 10]
    assert list(islice(backoff_delays(0.001, 0.05), 8)) == [0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.05, 0.05]


def test_a_first_wait_above_the_cap_is_kept_once_then_the_cap_rules() -> None:
    """faust_app's retry_backoff_s may exceed its 10 s cap: it waited that long once, then 10 s."""
    assert list(islice(backoff_delays(15.0, 10.0), 3)) == [15.0, 10.0, 10.0]


def test_zero_waits_are_allowed_and_negative_ones_refused() -> None:
    assert list(islice(backoff_delays(0.0, 0.0), 3)) == [0.0, 0.0, 0.0]  # the sink's tests run without waits
    with pytest.raises(ValueError, match="waits >= 0"):
        next(backoff_delays(-1.0, 1.0))


@pytest.mark.parametrize("r", [0.0, 0.25, 0.999999])
def test_jitter_stretches_each_wait_by_a_factor_in_one_to_two(r: float) -> None:
    waits = list(islice(backoff_delays(0.05, 2.0, jitter=True, rand=lambda: r), 8))
    bare = list(islice(backoff_delays(0.05, 2.0), 8))
    assert waits == [b * (1 + r) for b in bare]
    assert all(b <= w < 2 * b for w, b in zip(waits, bare, strict=True))


def test_no_more_waits_once_the_deadline_has_passed() -> None:
    now = [0.0]
    delays = backoff_delays(1.0, 4.0, until=10.0, clock=lambda: now[0])
    got = []
    for d in delays:
        got.append(d)
        now[0] += d
    assert got == [1, 2, 4, 4]  # at 11 s the deadline (10 s) has passed: the caller gives up


def test_backoff_state_resets_on_success_and_says_when_it_is_due() -> None:
    now = [0.0]
    b = Backoff(0.5, 2.0, clock=lambda: now[0])
    assert b.due() and b.delay == 0.0
    assert [b.failed() for _ in range(4)] == [0.5, 1.0, 2.0, 2.0]
    assert not b.due()
    now[0] += 2.0
    assert b.due()
    b.succeeded()
    assert b.delay == 0.0 and b.failed() == 0.5
    with pytest.raises(ValueError, match="first_s <= cap_s"):
        Backoff(2.0, 1.0)


class Tables:
    """Stands in for the catalog's reload: hands out numbered table versions."""

    def __init__(self) -> None:
        self.loaded = 0

    def reload(self) -> str:
        self.loaded += 1
        return f"v{self.loaded}"


def test_a_conflicting_commit_reloads_and_runs_the_whole_step_again() -> None:
    tables, seen, slept, conflicts = Tables(), [], [], []

    def step(table):
        seen.append(table)
        if len(seen) < 3:
            raise CommitFailedException("another writer won")
        return f"committed on {table}"

    got = commit_with_retry(tables.reload, step, attempts=5, first="v0", sleep=slept.append, rand=lambda: 0.5,  # type: ignore[arg-type]
                            on_conflict=lambda t, e, a: conflicts.append((t, a)))
    assert got == "committed on v2"
    assert seen == ["v0", "v1", "v2"]  # the first attempt uses the table just loaded, then fresh metadata
    assert conflicts == [("v0", 0), ("v1", 1)]
    assert slept == [0.05 * 1.5, 0.1 * 1.5]


def test_conflicts_on_every_attempt_end_with_the_count_and_other_errors_pass_through() -> None:
    tables, slept = Tables(), []

    def conflict(table):
        raise CommitFailedException("lost")

    with pytest.raises(CommitConflictsExhausted) as info:
        commit_with_retry(tables.reload, conflict, attempts=4, sleep=slept.append, rand=lambda: 0.0)  # type: ignore[arg-type]
    assert info.value.attempts == 4 and tables.loaded == 4 and slept == [0.05, 0.1, 0.2, 0.4]

    def broken(table):
        raise OSError("S3 away")

    with pytest.raises(OSError, match="S3 away"):
        commit_with_retry(tables.reload, broken, attempts=4, sleep=slept.append)  # type: ignore[arg-type]
