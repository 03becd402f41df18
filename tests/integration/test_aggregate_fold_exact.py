"""The fold script's integer arithmetic, against Python's integers, in a real Redis.

Integral sums and sums of squares are decimal text in Redis (``aggregate_fold.lua``): sums below
10^15 on both sides take a double, larger ones 7-digit limbs. Random int64 values, the
boundaries of both paths and sums that cross zero are folded in random cuts (one script call or
many, one round trip or many), and every tile must equal Python's exact count, sum, sum of squares,
min and max."""

from __future__ import annotations

import dataclasses
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.aggregate_plan import FoldPlan
from schemas.aggregation import AggregationSpec, parse_aggregates
from schemas.aggregation_group import aggregation_group
from schemas.group import FeatureGroup
from schemas.names import aggregate_key
from schemas.types import FeatureDefinition as F
from sinks.online import aggregates
from sinks.online.aggregate_columns import FoldEvent
from sinks.online.aggregates import AggregateStore
from sinks.online.connect import connect

T0 = 1_704_844_800 * 10**9  # 2024-01-10T00:00:00Z
INT64 = st.integers(-(2**63), 2**63 - 1)
# The double path's edge (10^15), 2^53 and the limb edges, either sign.
EDGES = st.sampled_from([0, 1, -1, 10**15 - 1, 10**15, 2**53, 2**53 + 1, 9_999_999, 10**7, 10**14 * 9 + 99,
                         2**63 - 1, -(2**63), -(10**15 - 1), -(10**15)])
VALUES = st.lists(st.one_of(INT64, EDGES, st.integers(-10**16, 10**16)), min_size=1, max_size=60)


def _aggregation_group() -> FeatureGroup:
    source = FeatureGroup("src", "id", "event_time",
                          (F("id", "String"), F("event_time", "String"), F("k", "String"), F("q", "Integral")),
                          partitions=1)
    spec = AggregationSpec("src", "k", parse_aggregates(["q:sum,count,min,max@lifetime"], group="agg"), 3600 * 10**9)
    return dataclasses.replace(aggregation_group("agg", spec, source), creation_time=source.creation_time + 1)


AGG = _aggregation_group()


@pytest.fixture(scope="module")
def fold_store(stack):
    client = connect(stack.redis_url)
    prefix = f"{stack.topic_prefix}exact-"
    yield AggregateStore(client, prefix), client, prefix
    client.close()


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(values=VALUES, per_call=st.integers(1, 60), per_trip=st.integers(1, 60), data=st.data())
def test_integral_tiles_equal_python_integers(fold_store, values, per_call, per_trip, data):
    store, client, prefix = fold_store
    agg = AGG
    plan: FoldPlan = store.plan(agg)
    key = uuid.uuid4().hex
    backfill = data.draw(st.booleans(), label="backfill lane")
    events = [FoldEvent(key, plan.event_arg_of(T0 + i * 10**9, 0, i, [v]), 0, i, T0 + i * 10**9)
              for i, v in enumerate(values)]
    cut = data.draw(st.integers(0, len(events)), label="cut")
    saved = aggregates.EVENTS_PER_CALL, aggregates.EVENTS_PER_ROUND_TRIP
    aggregates.EVENTS_PER_CALL, aggregates.EVENTS_PER_ROUND_TRIP = per_call, per_trip
    try:
        # Two folds, so the state also crosses from one script call's cache to the next.
        folded = store.fold_events(agg, events[:cut], backfill=backfill).counts.get("folded", 0)
        folded += store.fold_events(agg, events[cut:], backfill=backfill).counts.get("folded", 0)
        again = store.fold_events(agg, events, backfill=backfill)  # a redelivery changes nothing
    finally:
        aggregates.EVENTS_PER_CALL, aggregates.EVENTS_PER_ROUND_TRIP = saved
    assert folded == len(values)
    assert again.counts.get("duplicate", 0) == len(values)

    tile = client.hget(aggregate_key(prefix, agg.name, key), "i|q|l|0")  # layout: sinks/online/aggregates.py
    assert tile is not None
    count, total, squares, low, high = tile.decode().split(" ")
    want = (len(values), sum(values), sum(v * v for v in values), min(values), max(values))
    assert (int(count), int(total), int(squares), int(low), int(high)) == want
    # Canonical text: no leading zeros, no "-0".
    for text in (total, squares, low, high):
        assert text == str(int(text))
    got = store.get_records(agg, [key], None, now_ns=T0 + len(values) * 10**9)[0]
    assert got is not None
    assert (got["q_count_lifetime"], got["q_sum_lifetime"], got["q_min_lifetime"], got["q_max_lifetime"]) == \
        (len(values), sum(values), min(values), max(values))
