"""Read planning of aggregation groups (sinks/online/aggregates.py ``AggregateReads``): the field lists
it keeps for the current minute are exactly what the plan computes, read after read, whichever way
the read time moves; and the functions over one feature and window share one list (no I/O)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.aggregate_plan import FoldPlan
from schemas.aggregation import AggregationSpec, parse_aggregates
from schemas.aggregation_group import aggregation_group
from schemas.group import FeatureGroup
from schemas.tiles import DAY_NS, MINUTE_NS
from schemas.types import FeatureDefinition as F
from sinks.online.aggregates import AggregateReads

SOURCE = FeatureGroup("transactions", "txn_id", "event_time",
                      (F("txn_id", "String"), F("event_time", "String"), F("card_id", "String"),
                       F("amount", "Fractional"), F("qty", "Integral")), offline_enabled=False)
GROUP = aggregation_group("card-stats", AggregationSpec("transactions", "card_id", parse_aggregates(
    ["amount:sum,count,mean,min,max@10m,1h,7d,90d", "qty:sum,stddev@2h,lifetime", "amount:last_n(3)@1d"])), SOURCE)
T0 = 1_800_000_000 * 10**9


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(-3 * DAY_NS, 3 * DAY_NS), min_size=1, max_size=12))
def test_the_kept_field_lists_equal_the_plan_at_every_read_time(offsets):
    reads = AggregateReads("fs")
    plan = FoldPlan.of(GROUP)
    for off in offsets:
        for t in (T0 + off, T0 + off + 1, T0 + off + MINUTE_NS - 1):  # within one minute and across
            read = reads.read(GROUP, ["k"], None, now_ns=t)
            for a in plan.aggregates(None):
                if a.function.value != "distinct":
                    assert read.field_lists[a.output_name] == plan.fields_of(a, t), (a.output_name, t)


def test_functions_over_one_feature_and_window_share_one_list_and_the_read_asks_each_field_once():
    read = AggregateReads("fs").read(GROUP, ["k"], None, now_ns=T0)
    lists = read.field_lists
    assert lists["amount_sum_7d"] is lists["amount_mean_7d"] is lists["amount_max_7d"]
    assert lists["amount_sum_7d"] is not lists["amount_sum_90d"]
    assert len(read.fields) == len(set(read.fields))
    assert set(read.fields) == {f for fs in lists.values() for f in fs}
