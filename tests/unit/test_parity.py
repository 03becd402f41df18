"""The parity rules (schemas/parity.py): the online fold mirrors write_if_newer.lua, offsets are judged
exactly once below the recorded position, and differences are told from records in flight."""

from __future__ import annotations

import random
from collections import Counter

from schemas.ordering import version_key
from schemas.parity import (
    Verdict,
    fold_online,
    judge_offsets,
    judge_online,
    offset_ranges,
    online_value,
    row_differences,
    same_values,
)


def _fold(versions):
    state = None
    for key, op, record, hard in versions:
        state = fold_online(state, key, op, record, None, hard=hard)
    return state


def test_the_newest_event_time_wins_whatever_the_arrival_order():
    a = (version_key(20, 0, 1), "put", {"x": 1}, False)
    b = (version_key(10, 0, 2), "put", {"x": 2}, False)
    assert online_value(_fold([a, b]), 0) == {"x": 1}
    assert online_value(_fold([b, a]), 0) == {"x": 1}


def test_a_soft_delete_hides_older_puts_and_a_hard_delete_lets_them_back():
    put_new = (version_key(20, 0, 1), "put", {"x": 1}, False)
    soft = (version_key(30, 0, 2), "delete", None, False)
    hard = (version_key(30, 0, 2), "delete", None, True)
    older = (version_key(10, 0, 3), "put", {"x": 9}, False)
    assert online_value(_fold([put_new, soft, older]), 0) is None
    assert online_value(_fold([put_new, hard, older]), 0) == {"x": 9}  # as the script: removed, then accepted


def test_a_hard_delete_that_is_not_newer_changes_nothing():
    put_new = (version_key(20, 0, 1), "put", {"x": 1}, False)
    hard_old = (version_key(10, 0, 2), "delete", None, True)
    assert online_value(_fold([put_new, hard_old]), 0) == {"x": 1}


def test_nulls_are_not_served_and_expired_records_are_none():
    state = fold_online(None, version_key(1, 0, 0), "put", {"a": 1, "b": None}, 100)
    assert online_value(state, 99) == {"a": 1}
    assert online_value(state, 100) is None


def test_a_difference_is_in_flight_or_dead_lettered_before_it_is_a_mismatch():
    assert judge_online({"a": 1}, {"a": 1}, in_flight=True, dead_lettered=True) is Verdict.OK
    assert judge_online({"a": 1}, None, in_flight=True, dead_lettered=False) is Verdict.IN_FLIGHT
    assert judge_online({"a": 1}, None, in_flight=False, dead_lettered=True) is Verdict.DEAD_LETTERED
    assert judge_online({"a": 1}, None, in_flight=False, dead_lettered=False) is Verdict.MISMATCH
    assert judge_online(None, {"a": 1}, in_flight=False, dead_lettered=False) is Verdict.MISMATCH


def test_values_compare_exactly():
    assert not same_values(0.0, -0.0)
    assert same_values([1.5, "a"], (1.5, "a"))
    assert not same_values(True, 1)
    assert not same_values({"a": 1}, {"a": 1, "b": 2})


def test_offsets_below_the_recorded_position_must_be_there_exactly_once():
    table = Counter({o: 1 for o in range(0, 100) if o not in (5, 6, 7, 8, 40, 41)})
    table[50] = 2          # doubled
    table[3] = 1           # present though not targeted offline
    table[120] = 1         # past the recorded position
    f = judge_offsets(table, low=0, recorded=100, end=130, not_targeted={3, 8}, poison={40, 41},
                      dead_lettered={40})
    assert f.missing == [5, 6, 7]
    assert f.doubled == [50]
    assert f.unexpected == [3, 120]
    assert f.lost_poison == [41]    # the sink could not write it, and it is not in the dead-letter topic
    assert f.in_flight == 30
    assert f.checked == 100 - 4     # 3 and 8 not targeted, 40 and 41 poison
    assert offset_ranges(f.missing + [9, 11]) == [(5, 7), (9, 9), (11, 11)]


def test_nothing_recorded_means_everything_is_in_flight_and_nothing_is_missing():
    f = judge_offsets(Counter(), low=10, recorded=None, end=25, not_targeted=(), poison=(), dead_lettered=())
    assert (f.in_flight, f.checked, f.mismatches) == (15, 0, 0)


def test_offset_judgement_against_a_brute_force_reading():
    rng = random.Random(3)
    for _ in range(200):
        end = rng.randrange(0, 40)
        recorded = rng.choice([None, rng.randrange(0, end + 1)])
        skip = {o for o in range(end) if rng.random() < 0.1}
        poison = {o for o in range(end) if rng.random() < 0.1} - skip
        parked = {o for o in poison if rng.random() < 0.7}
        table = Counter({o: rng.choice([0, 1, 1, 1, 2]) for o in range(end + 3)})
        table = +table
        f = judge_offsets(table, low=0, recorded=recorded, end=end, not_targeted=skip, poison=poison,
                          dead_lettered=parked)
        upto = recorded or 0
        must = [o for o in range(upto) if o not in skip and o not in poison]
        assert f.missing == [o for o in must if table[o] == 0]
        assert f.doubled == [o for o in must if table[o] > 1]
        assert sorted(f.unexpected) == sorted(o for o in table if o >= upto or o in skip or o in poison)
        assert f.lost_poison == sorted(o for o in poison if o < upto and o not in parked)


def test_a_row_differs_from_its_message_by_feature():
    row = {"id": "c1", "age": 42, "tags": ["a"], "is_deleted": False}
    assert row_differences(row, "put", {"id": "c1", "age": 42, "tags": ["a"]}, 7, event_time_column="t",
                           id_column="id", record_id="c1", row_event_time_ns=7) == {}
    diffs = row_differences(row, "put", {"id": "c1", "age": 41, "tags": ["a"]}, 7, event_time_column="t",
                            id_column="id", record_id="c1", row_event_time_ns=8)
    assert diffs == {"age": (42, 41), "t": (8, 7)}
    tomb = {"id": "c1", "age": None, "tags": None, "is_deleted": True}
    assert row_differences(tomb, "delete", None, 7, event_time_column="t", id_column="id", record_id="c1",
                           row_event_time_ns=7) == {}
