"""How a fold's script calls are cut into pipelined round trips (``sinks/online/aggregates.py``):
whole calls, in order, at most the bound of events each unless one call alone is larger."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from sinks.online.aggregates import _round_trips

CALLS = st.lists(st.tuples(st.sampled_from("abc"), st.integers(1, 30)), max_size=40)


@given(CALLS, st.integers(1, 50))
def test_round_trips_keep_calls_whole_in_order_and_bounded(sizes, bound):
    calls = [(key, [(i, b"x")] * n) for i, (key, n) in enumerate(sizes)]
    trips = list(_round_trips(calls, bound))
    assert [c for trip in trips for c in trip] == calls
    for trip in trips:
        held = sum(len(c[1]) for c in trip)
        assert trip and (held <= bound or len(trip) == 1)
    # Greedy: a trip is cut only where the next call would pass the bound.
    for trip, after in zip(trips, trips[1:], strict=False):
        assert sum(len(c[1]) for c in trip) + len(after[0][1]) > bound


def test_a_bound_of_a_thousand_cuts_a_replay_batch_into_twenty_trips():
    calls = [(f"k{i}", [(i, b"x")] * 10) for i in range(2000)]  # 20,000 events of 2,000 keys
    assert [sum(len(c[1]) for c in t) for t in _round_trips(calls, 1000)] == [1000] * 20
