"""Differential: the aggregation fold's events built from a batch's Arrow columns
(sinks/online/aggregate_columns.py, through ``OnlineApplier.prepare``) against those built from
messages judged one by one, on random batches of good and bad messages: the same keys and fold
script arguments byte for byte, in the same order, and the same dead letters. No servers."""

from __future__ import annotations

import dataclasses
from typing import Any

import orjson
import redis
from hypothesis import HealthCheck, given, settings

from schemas.aggregation import AggregationSpec, parse_aggregates
from schemas.aggregation_group import aggregation_group
from schemas.group import FeatureGroup
from sinks.online.store import OnlineStore
from streams.group_view import GroupView
from streams.online.applier import OnlineApplier
from streams.route import RawMessage, route_batch_columns
from tests.unit.test_batch_differential import GROUPS, PREFIX, batches
from tests.unit.test_online_column_args import _good_batch

NOW = 1_800_000_000 * 10**9
DAY = 86400 * 10**9


def _agg(name: str, source: str, by: str, features: list[str]) -> FeatureGroup:
    spec = AggregationSpec(source, by, parse_aggregates(features, group=name), DAY)
    g = aggregation_group(name, spec, GROUPS[source])
    return dataclasses.replace(g, creation_time=GROUPS[source].creation_time + 1)


AGGREGATIONS = {
    # every kind of state over group "a" (String id and event time), keyed by a String feature
    "ag_a": _agg("ag_a", "a", "s", ["i:sum,count,mean,min,max,stddev@10m,1d", "f:sum,max@1h",
                                    "s:count,last_n(3),distinct@1d", "i:last_n(2),distinct", "f:distinct@1d"]),
    # keyed by an Integral feature; a numeric function of the Fractional event time folds from columns
    "ag_b": _agg("ag_b", "b", "i", ["f:sum,mean@1h,90d", "et:max@1d", "added:sum@1d"]),
    # last_n of a Fractional event time keeps the value's text: its source goes per record whole
    "ag_b2": _agg("ag_b2", "b", "rid", ["et:last_n(2)", "f:count@1d"]),
}
ALL = {**GROUPS, **AGGREGATIONS}


def _prepared(batch: list[RawMessage], columns_from: int) -> tuple[list[Any], list[Any]]:
    store = OnlineStore(redis.Redis(port=1), PREFIX)  # never connected: prepare writes nothing
    applier = OnlineApplier(GroupView(lambda: dict(ALL)), PREFIX, store, None)  # type: ignore[arg-type]
    applier.columns_from = columns_from
    prepared = applier.prepare(batch, now_ns=NOW)
    folds = [(f.group.name, [tuple(e) for e in f.events]) for f in prepared.folds]
    poison = [(p.raw.topic, p.raw.partition, p.raw.offset, p.reason) for p in prepared.poison]
    for w in prepared.writes:
        poison += [(p.raw.topic, p.raw.partition, p.raw.offset, p.reason) for p in w.rejected]
    return folds, sorted(poison)


@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
@given(batches())
def test_fold_events_from_columns_equal_those_from_messages(batch: list[RawMessage]) -> None:
    per_record = _prepared(batch, columns_from=10**9)
    columns = _prepared(batch, columns_from=1)
    assert columns == per_record


def test_good_rows_fold_from_the_columns_and_agree() -> None:
    """Valid puts and deletes reach the fold from the columns (else the test above would compare the
    per-record path with itself), but a source whose group keeps a Fractional event time's text
    goes per record; deletes are not folded."""
    batch = _good_batch(GROUPS["a"], 60)
    routed, _ = route_batch_columns(batch, GroupView(lambda: dict(ALL)), prefix=PREFIX, store="OnlineStore",
                                    columns_from=1)
    assert not routed.sources and len(routed.source_rows["a"].rows) == 60
    folds, poison = _prepared(batch, columns_from=1)
    assert not poison and (folds, poison) == _prepared(batch, columns_from=10**9)
    events = dict(folds)["ag_a"]
    assert [e[0] is None for e in events] == [i % 7 == 3 for i in range(60)]  # the deletes
    assert orjson.loads(events[1][1])[:3] == ["1", "1", str(events[1][4])]

    batch_b = _good_batch(GROUPS["b"], 30)
    routed, _ = route_batch_columns(batch_b, GroupView(lambda: dict(ALL)), prefix=PREFIX, store="OnlineStore",
                                    columns_from=1)
    assert "b" not in routed.source_rows and len(routed.sources["b"]) == 30  # ag_b2's last_n(et)
    folds_b, poison_b = _prepared(batch_b, columns_from=1)
    assert [name for name, _ in folds_b] == ["ag_b", "ag_b2"] and not poison_b


def test_a_row_proven_only_per_record_keeps_its_place_among_the_column_rows() -> None:
    """The fold needs each partition's events in offset order: a row judged per record (a valid event
    time the columns do not prove) is merged back at its place."""
    batch = _good_batch(GROUPS["a"], 20)
    obj = orjson.loads(batch[4].value)
    obj["record"]["et"] = obj["record"]["et"][:-1] + "+00:00"
    batch[4] = batch[4]._replace(value=orjson.dumps(obj))
    routed, _ = route_batch_columns(batch, GroupView(lambda: dict(ALL)), prefix=PREFIX, store="OnlineStore",
                                    columns_from=1)
    assert len(routed.sources["a"]) == 1 and len(routed.source_rows["a"].rows) == 19
    folds, poison = _prepared(batch, columns_from=1)
    assert not poison
    assert [e[3] for e in dict(folds)["ag_a"]] == list(range(20))
    assert (folds, poison) == _prepared(batch, columns_from=10**9)
