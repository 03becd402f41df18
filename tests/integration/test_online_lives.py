"""A group deleted and created again under its name: the online store's scripts and reads tell its
lives apart (``write_if_newer.lua`` and ``aggregate_fold.lua``, "Lives"), in a real Redis.

The keys of both lives are the same. A write or fold of the later life starts a key of the earlier
life again (an aggregation key's distinct-count sketches too); one of the earlier life (a
processor's view a second old, after a purge) changes nothing of the later life's; a read sees
only its own life's state. A key written before lives existed is taken as the writer's life."""

from __future__ import annotations

import dataclasses
import uuid

import pytest

from schemas.aggregation import AggregationSpec, parse_aggregates
from schemas.aggregation_group import aggregation_group
from schemas.group import FeatureGroup
from schemas.messages import DeleteMessage, PutMessage
from schemas.names import aggregate_key
from schemas.types import FeatureDefinition as F
from sinks.online.aggregate_columns import FoldEvent
from sinks.online.aggregates import AggregateStore
from sinks.online.connect import connect
from sinks.online.status import WriteStatus
from sinks.online.store import OnlineStore

pytestmark = pytest.mark.integration
T0 = 1_704_844_800 * 10**9  # 2024-01-10T00:00:00Z
NOW = T0 + 86_400 * 10**9
SOURCE = FeatureGroup("src", "id", "event_time",
                      (F("id", "String"), F("event_time", "String"), F("k", "String"), F("q", "Integral"),
                       F("m", "String")), partitions=1)


def _life(created: float, features: list[str]) -> FeatureGroup:
    spec = AggregationSpec("src", "k", parse_aggregates(features, group="agg"), 3600 * 10**9)
    return dataclasses.replace(aggregation_group("agg", spec, SOURCE), creation_time=created)


FIRST = _life(1_800_000_000.25, ["q:sum,count@lifetime", "m:distinct@lifetime"])
SECOND = _life(1_800_000_060.5, ["q:count,min@lifetime", "m:distinct@lifetime"])


def _events(store: AggregateStore, group: FeatureGroup, key: str, offsets: range, merchant: str) -> list[FoldEvent]:
    plan = store.plan(group)
    out = []
    for o in offsets:
        et = T0 + o * 10**9
        values = [o if s.feature == "q" else merchant for s in plan.states]
        out.append(FoldEvent(key, plan.event_arg_of(et, 0, o, values), 0, o, et))
    return out


@pytest.fixture
def lives(stack):
    client = connect(stack.redis_url)
    prefix = f"{stack.topic_prefix}lives-{uuid.uuid4().hex[:8]}"
    yield AggregateStore(client, prefix), client, prefix
    client.close()


def test_a_later_life_starts_the_key_again_and_an_earlier_one_folds_nothing(lives):
    store, client, prefix = lives
    # The first life folds offsets 0-9 live (merchant "a"), then is deleted without a purge.
    assert store.fold_events(FIRST, _events(store, FIRST, "k1", range(10), "a")).counts == {"folded": 10}
    first = store.get_records(FIRST, ["k1"], None, now_ns=NOW)[0]
    assert first["q_count_lifetime"] == 10 and first["m_distinct_lifetime"] == 1
    # Created again: before it folds anything, a read sees none of the first life's state.
    assert store.get_records(SECOND, ["k1"], None, now_ns=NOW) == [None]
    # Its backfill refolds the topic from offset 0 (merchant "b"): none of it is a "duplicate" of
    # the first life's offsets, and no tile or sketch of the first life is left.
    assert store.fold_events(SECOND, _events(store, SECOND, "k1", range(12), "b"),
                             backfill=True).counts == {"folded": 12}
    second = store.get_records(SECOND, ["k1"], None, now_ns=NOW)[0]
    assert (second["q_count_lifetime"], second["q_min_lifetime"], second["m_distinct_lifetime"]) == (12, 0, 1)
    # A processor still on the first life's view: nothing it sends is folded, nor counted as late.
    stale = store.fold_events(FIRST, _events(store, FIRST, "k1", range(12, 20), "c"))
    assert stale.counts == {"superseded": 8} and stale.late == []
    assert store.get_records(SECOND, ["k1"], None, now_ns=NOW)[0] == second
    assert store.get_records(FIRST, ["k1"], None, now_ns=NOW) == [None]
    # The live lane of the second life goes on from there.
    assert store.fold_events(SECOND, _events(store, SECOND, "k1", range(12, 15), "b")).counts == {"folded": 3}
    assert store.get_records(SECOND, ["k1"], None, now_ns=NOW)[0]["q_count_lifetime"] == 15
    hk = aggregate_key(prefix, "agg", "k1")
    assert client.hget(hk, "life") == b"1800000060500000"


def test_a_key_folded_before_lives_existed_is_adopted(lives):
    store, client, prefix = lives
    assert store.fold_events(SECOND, _events(store, SECOND, "k2", range(5), "a")).counts == {"folded": 5}
    hk = aggregate_key(prefix, "agg", "k2")
    client.hdel(hk, "life")  # the layout of an earlier release
    assert store.get_records(SECOND, ["k2"], None, now_ns=NOW)[0]["q_count_lifetime"] == 5
    assert store.fold_events(SECOND, _events(store, SECOND, "k2", range(3, 8), "a")).counts == \
        {"duplicate": 2, "folded": 3}
    assert store.get_records(SECOND, ["k2"], None, now_ns=NOW)[0]["q_count_lifetime"] == 8
    assert client.hget(hk, "life") == b"1800000060500000"


PLAIN_FIRST = dataclasses.replace(SOURCE, creation_time=1_800_000_000.25)
PLAIN_SECOND = dataclasses.replace(SOURCE, creation_time=1_800_000_060.5)


def _put(rid: str, et_s: int, q: int) -> PutMessage:
    return PutMessage(rid, T0 + et_s * 10**9, {"id": rid, "k": "x", "q": q, "m": None})


def test_a_later_life_of_a_plain_group_is_served_even_older_records(stack):
    store = OnlineStore.from_url(stack.redis_url, f"{stack.topic_prefix}plain-lives-{uuid.uuid4().hex[:8]}")
    try:
        # The first life: r1 at a late event time, r2 soft-deleted late, r3 put; never purged.
        first = store.apply_batch(PLAIN_FIRST, [(_put("r1", 900, 1), 0, 7),
                                                (DeleteMessage("r2", T0 + 900 * 10**9, "d", "SoftDelete"), 0, 8),
                                                (_put("r3", 900, 3), 0, 9)], now_ns=NOW)
        assert first.statuses == [WriteStatus.APPLIED, WriteStatus.DELETED, WriteStatus.APPLIED]
        assert store.get_record(PLAIN_FIRST, "r1", now_ns=NOW)["q"] == 1
        # Created again: nothing of the first life is served, before or after the new life writes.
        assert store.get_record(PLAIN_SECOND, "r1", now_ns=NOW) is None
        assert store.record_ids(PLAIN_SECOND) == []
        second = store.apply_batch(PLAIN_SECOND, [(_put("r1", 10, -1), 0, 0), (_put("r2", 10, -2), 0, 1)],
                                   now_ns=NOW)
        assert second.statuses == [WriteStatus.APPLIED, WriteStatus.APPLIED]  # older, but of a later life
        assert store.get_record(PLAIN_SECOND, "r1", now_ns=NOW)["q"] == -1
        assert store.get_record(PLAIN_SECOND, "r2", now_ns=NOW)["q"] == -2
        assert store.record_ids(PLAIN_SECOND) == ["r1", "r2"]
        # A processor still on the first life's view: it changes nothing of the second life's.
        stale = store.apply_batch(PLAIN_FIRST, [(_put("r1", 999, 100), 0, 50),
                                                (DeleteMessage("r2", T0 + 999 * 10**9, "d", "HardDelete"), 0, 51)],
                                  now_ns=NOW)
        assert stale.statuses == [WriteStatus.STALE, WriteStatus.STALE]
        assert store.get_record(PLAIN_SECOND, "r1", now_ns=NOW)["q"] == -1
        assert store.get_record(PLAIN_SECOND, "r2", now_ns=NOW)["q"] == -2
        assert store.record_meta(PLAIN_SECOND, "r1")["event_time_ns"] == T0 + 10 * 10**9
        # A hash written before lives existed (no __life) is taken as the writer's life.
        key = f"{store.prefix}:src:r3"
        store.client.hdel(key, "__life")
        assert store.get_record(PLAIN_SECOND, "r3", now_ns=NOW)["q"] == 3
        assert store.apply_batch(PLAIN_SECOND, [(_put("r3", 10, 30), 0, 2)], now_ns=NOW).statuses == \
            [WriteStatus.STALE]  # older than what it holds, as before lives
        assert store.apply_batch(PLAIN_SECOND, [(_put("r3", 901, 31), 0, 3)], now_ns=NOW).statuses == \
            [WriteStatus.APPLIED]
        assert store.client.hget(key, "__life") == PLAIN_SECOND.life.encode()
    finally:
        store.close()
