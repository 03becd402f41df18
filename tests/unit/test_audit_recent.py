"""Which ids an audit checks first (streams/audit_recent.py): an id stays until it gets a real verdict,
ids judged in flight come first, the newest changes next, and both sets stay within their limits."""

from __future__ import annotations

import random

import pytest

from streams.audit_recent import RecentIds


def test_an_id_stays_until_a_real_verdict_and_in_flight_ones_come_first():
    recent = RecentIds()
    known = {f"i{k}" for k in range(100)}
    age = {f"i{k}": k for k in range(100)}.__getitem__
    for k in range(100):
        recent.changed(f"i{k}")
    rng = random.Random(1)
    first = recent.pick(10, rng, known, age)
    assert first[:5] == ["i0", "i1", "i2", "i3", "i4"] and len(set(first)) == 10  # the newest half, then random
    for rid in first:
        recent.judged(rid, in_flight=rid in ("i3", "i4"))
    second = recent.pick(10, rng, known, age)
    assert second[:2] == ["i3", "i4"]                 # retried first
    unjudged = [f"i{k}" for k in range(100) if f"i{k}" not in first]
    assert second[2:6] == unjudged[:4]                 # then the newest not yet judged
    assert not set(second) & (set(first) - {"i3", "i4"})
    assert len(recent) == 100 - 8
    recent.judged("i3", in_flight=False)
    assert "i3" not in recent.pick(100, rng, known, age)


def test_picking_alone_forgets_nothing_and_unknown_ids_are_never_picked():
    recent = RecentIds()
    for rid in ("a", "b", "c"):
        recent.changed(rid)
    rng = random.Random(2)
    age = {"a": 3, "b": 2, "c": 1}.__getitem__
    assert recent.pick(2, rng, {"a", "b", "c"}, age)[0] == "c"
    assert sorted(recent.pick(5, rng, {"a", "b"}, age)) == ["a", "b"]
    assert len(recent) == 3


def test_both_sets_are_bounded():
    recent = RecentIds(changed_limit=10, retry_limit=3)
    known = {f"i{k}" for k in range(1000)}
    age = {f"i{k}": k for k in range(1000)}.__getitem__
    for k in range(1000):
        recent.changed(f"i{k}")
    for k in range(500, 510):
        recent.judged(f"i{k}", in_flight=True)
    picked = recent.pick(1000, random.Random(3), known, age)
    assert picked[:3] == ["i507", "i508", "i509"]            # the 3 latest retries; older ones dropped
    assert sorted(picked[3:], key=age) == [f"i{k}" for k in range(10)]  # the 10 newest changes kept
    assert len(recent) == 13


def test_limits_must_be_positive():
    with pytest.raises(ValueError, match="changed_limit=0"):
        RecentIds(changed_limit=0)
