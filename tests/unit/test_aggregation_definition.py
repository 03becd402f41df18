"""Aggregation group definitions: parsing, checks against the source, the registry's JSON form,
and the values merged from tile states (schemas/aggregation*.py, schemas/aggregate_values.py)."""

from __future__ import annotations

import math
import statistics
from fractions import Fraction

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.aggregate_values import NumericTile, numeric_value
from schemas.aggregation import Aggregate, AggregationSpec, Function, parse_aggregates
from schemas.aggregation_group import aggregation_group
from schemas.errors import DefinitionError, RecordValidationError
from schemas.group import FeatureGroup
from schemas.tiles import DAY_NS, HOUR_NS, MINUTE_NS
from schemas.types import CollectionType, ScalarType
from schemas.types import FeatureDefinition as F
from schemas.validate import compile_validator

SOURCE = FeatureGroup("transactions", "txn_id", "event_time",
                      (F("txn_id", "String"), F("event_time", "String"), F("card_id", "String"),
                       F("amount", "Fractional"), F("merchant", "String"), F("qty", "Integral"),
                       F("tags", "String", "List")), offline_enabled=False)


def spec(*texts: str, by: str = "card_id", **kw) -> AggregationSpec:
    return AggregationSpec("transactions", by, parse_aggregates(texts), **kw)


def test_the_issue_example_parses_into_named_typed_features():
    g = aggregation_group("card-stats", spec("amount:sum,count,mean@10m,1h,7d", "merchant:distinct@1d",
                                             "amount:last_n(10)"), SOURCE)
    assert g.feature_names == (
        "card_id", "event_time", "amount_sum_10m", "amount_sum_1h", "amount_sum_7d", "amount_count_10m",
        "amount_count_1h", "amount_count_7d", "amount_mean_10m", "amount_mean_1h", "amount_mean_7d",
        "merchant_distinct_1d", "amount_last10_lifetime")
    assert g.feature("amount_sum_7d").type is ScalarType.FRACTIONAL
    assert g.feature("amount_count_7d").type is ScalarType.INTEGRAL
    assert g.feature("merchant_distinct_1d").type is ScalarType.INTEGRAL
    assert g.feature("amount_last10_lifetime").collection is CollectionType.LIST
    assert g.is_aggregation and g.online_enabled and not g.offline_enabled
    assert g.aggregation.lateness_ns == 7 * DAY_NS
    assert g.aggregation.aggregates[0] == Aggregate("amount", Function.SUM, 10 * MINUTE_NS)


def test_registry_form_round_trips_and_older_entries_stay_readable():
    g = aggregation_group("card-stats", spec("qty:sum,stddev@2h,lifetime", "amount:last_n(5)@30m",
                                             lateness_ns=3600 * 10**9), SOURCE)
    d = orjson.loads(orjson.dumps(g.to_dict()))
    assert d["aggregation"]["allowed_lateness_s"] == 3600
    assert d["aggregation"]["types"] == {"qty": "Integral", "amount": "Fractional"}
    assert FeatureGroup.from_dict(d) == g
    plain = SOURCE.to_dict()
    assert "aggregation" not in plain  # plain groups keep their old registry form
    assert FeatureGroup.from_dict(plain).aggregation is None


@pytest.mark.parametrize(("source", "s", "match"), [
    (None, spec("amount:sum@1h"), "source feature group 'transactions' does not exist"),
    (SOURCE, spec("amount:sum@1h", by="nope"), "aggregation key 'nope' is not a feature"),
    (SOURCE, spec("amount:sum@1h", by="amount"), "aggregation key 'amount' is Fractional"),
    (SOURCE, spec("price:sum@1h"), "'transactions' has no feature 'price'"),
    (SOURCE, spec("merchant:sum@1h"), "sum of 'merchant' needs an Integral or Fractional feature; 'merchant' "
                                      "is String"),
    (SOURCE, spec("merchant:min@1h"), "min of 'merchant' needs an Integral or Fractional"),
    (SOURCE, spec("tags:count@1h"), "only scalar features are aggregated"),
])
def test_definitions_that_do_not_fit_the_source(source, s, match):
    with pytest.raises(DefinitionError, match=match) as info:
        aggregation_group("card-stats", s, source)
    assert info.value.group == "card-stats"


@pytest.mark.parametrize(("texts", "match"), [
    (["amount:sum@0m"], "window '0m': a sliding window must be from 1 minute to 90 days"),
    (["amount:sum@91d"], "from 1 minute to 90 days"),
    (["amount:sum@90m"], "window '90m': a window over 1 hour and up to 2 days slides by the hour"),
    (["amount:sum@3x"], "not a number with a unit"),
    (["amount:median@1h"], "function 'median' is not one of"),
    (["amount:last_n(101)"], "last_n needs N from 1 to 100"),
    (["amount:last_n"], "last_n needs N"),
    (["amount:sum(3)@1h"], "only last_n takes a number"),
    (["amount"], "must look like"),
    (["amount:sum@1h", "amount:sum@60m"], "'amount_sum_1h' is defined twice"),
])
def test_bad_aggregate_texts(texts, match):
    with pytest.raises(DefinitionError, match=match):
        AggregationSpec("transactions", "card_id", parse_aggregates(texts, group="card-stats"))


def test_bad_lateness_and_registry_shapes():
    with pytest.raises(DefinitionError, match="allowed lateness"):
        spec("amount:sum@1h", lateness_ns=-1)
    with pytest.raises(DefinitionError, match="lacks source, by"):
        AggregationSpec.from_dict({"aggregates": []}, group="g")
    with pytest.raises(DefinitionError, match="cannot aggregate its own events"):
        aggregation_group("transactions", spec("amount:sum@1h"), SOURCE)


def test_an_aggregation_group_refuses_writes_at_the_validator():
    g = aggregation_group("card-stats", spec("amount:sum@1h"), SOURCE)
    with pytest.raises(RecordValidationError, match="'card-stats' is an aggregation group.*read-only"):
        compile_validator(g)


ints = st.integers(-(2**63), 2**63 - 1)


@settings(max_examples=200, deadline=None)
@given(tiles=st.lists(st.lists(ints, max_size=6), max_size=6))
def test_integral_values_are_exact(tiles):
    states = [NumericTile(len(t), sum(t), 0.0, sum(x * x for x in t), low=min(t, default=None),
                          high=max(t, default=None)) for t in tiles]
    flat = [x for t in tiles for x in t]

    def value(fn):
        return numeric_value(Aggregate("qty", fn, HOUR_NS), states, True)

    assert value(Function.COUNT) == len(flat)
    assert value(Function.SUM) == sum(flat)
    if not flat:
        assert [value(f) for f in (Function.MEAN, Function.MIN, Function.MAX, Function.STDDEV)] == [None] * 4
        return
    assert value(Function.MEAN) == float(Fraction(sum(flat), len(flat)))
    assert (value(Function.MIN), value(Function.MAX)) == (min(flat), max(flat))
    exact = statistics.pstdev([Fraction(x) for x in flat])
    assert math.isclose(value(Function.STDDEV), float(exact), rel_tol=4e-16, abs_tol=1e-300)


def test_a_deleted_or_recreated_source_is_named_as_the_problem():
    from dataclasses import replace

    from schemas.aggregation_group import source_problem

    source = replace(SOURCE, creation_time=100.0)
    group = replace(aggregation_group("card-stats", spec("amount:sum@1h"), source), creation_time=200.0)
    assert source_problem(group, source) is None
    assert source_problem(source, None) is None  # a plain group has no source
    gone = source_problem(group, None)
    assert gone is not None and "source feature group 'transactions' was deleted" in gone and "'card-stats'" in gone
    again = source_problem(group, replace(source, creation_time=300.0))
    assert again is not None and "deleted and created again" in again
