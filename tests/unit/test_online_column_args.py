"""Differential: the online processor's batch path (schemas/batch.py columns → sinks/online/column_args.py,
through ``OnlineApplier.prepare``) against the per-record path (route → write_script_args), on random
batches of good and bad messages: the same Redis keys and script arguments byte for byte, in the same
order, and the same dead letters with the same reasons. No servers: nothing is written."""

from __future__ import annotations

import dataclasses
from typing import Any

import orjson
import redis
from hypothesis import HealthCheck, given, settings

from schemas.errors import RecordValidationError
from schemas.group import FeatureGroup
from schemas.names import online_key
from schemas.ttl import Ttl
from schemas.validate import compile_validator, validate_delete
from schemas.wire import encode
from sinks.online.script_calls import STRIDE
from sinks.online.store import OnlineStore, write_script_args
from streams.group_view import GroupView
from streams.online.applier import OnlineApplier
from streams.route import COLUMNS_MIN_ROWS, RawMessage, route_batch, route_batch_columns
from tests.unit.test_batch_differential import GROUPS, PREFIX, batches

NOW = 1_800_000_000 * 10**9  # 2027: some puts of group "b" (event times up to 2096) have expired
# The same definitions (same versions: the same judgement) with TTLs, so that expiry is compared too.
ONLINE_GROUPS = {"a": GROUPS["a"], "b": dataclasses.replace(GROUPS["b"], ttl=Ttl(3, "Weeks"))}


def _applier() -> OnlineApplier:
    store = OnlineStore(redis.Redis(port=1), PREFIX)  # never connected: prepare writes nothing
    applier = OnlineApplier(GroupView(lambda: dict(ONLINE_GROUPS)), PREFIX, store, None)  # type: ignore[arg-type]
    applier.columns_from = 1  # every batch as columns, however small: the path these tests compare
    return applier


def _per_record(batch: list[RawMessage]) -> tuple[dict[str, list[Any]], list[tuple[str, int, int, str]]]:
    routed, groups = route_batch(batch, GroupView(lambda: dict(ONLINE_GROUPS)), prefix=PREFIX, store="OnlineStore")
    calls: dict[str, list[Any]] = {}
    poison = [(p.raw.topic, p.raw.partition, p.raw.offset, p.reason) for p in routed.poison]
    for name, items in routed.work.items():
        for msg, partition, offset in items:
            try:
                args = write_script_args(groups[name], msg, partition, offset, NOW, checked=True)
            except RecordValidationError as exc:
                poison.append((f"{PREFIX}.{name}", partition, offset, str(exc)))
                continue
            calls.setdefault(name, []).append((msg.id, online_key(PREFIX, name, msg.id), args))
    return calls, poison


def _batch_path(batch: list[RawMessage], columns_from: int = 1) -> tuple[dict[str, list[Any]],
                                                                        list[tuple[str, int, int, str]]]:
    applier = _applier()
    applier.columns_from = columns_from
    prepared = applier.prepare(batch, now_ns=NOW)
    calls: dict[str, list[Any]] = {}
    poison = [(p.raw.topic, p.raw.partition, p.raw.offset, p.reason) for p in prepared.poison]
    for w in prepared.writes:
        poison += [(p.raw.topic, p.raw.partition, p.raw.offset, p.reason) for p in w.rejected]
        c = w.calls
        assert len(c.argv) == STRIDE * len(c) and len(c.ids) == len(c) == len(w.raws)
        if len(c):
            calls[w.group.name] = [(c.ids[k], c.keys[k], c.argv[STRIDE * k:STRIDE * (k + 1)]) for k in range(len(c))]
        # each call's raw message is the one its dead letter would carry
        assert [(r.partition, r.offset) for r in w.raws] == [(int(a[2]), int(a[3])) for _i, _k, a in calls.get(
            w.group.name, [])]
    return calls, poison


@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
@given(batches())
def test_batch_and_per_record_paths_give_the_same_script_arguments_and_dead_letters(batch: list[RawMessage]) -> None:
    calls_1, poison_1 = _per_record(batch)
    calls_2, poison_2 = _batch_path(batch)
    assert calls_2 == calls_1
    assert poison_2 == poison_1


def _good_batch(group: FeatureGroup, n: int, **extra: Any) -> list[RawMessage]:
    v = compile_validator(group)
    out = []
    for i in range(n):
        if i % 7 == 3:
            msg: Any = validate_delete(group, f"r{i}" if group.name == "a" else i, "2021-10-02T12:00:01Z",
                                       mode="HardDelete" if i % 2 else "SoftDelete")
        else:
            rec = {"rid": f"r{i}" if group.name == "a" else i,
                   "et": "2021-10-02T12:00:00.5Z" if group.name == "a" else [1633176000, 1633176000.0][i % 2],
                   "i": i, "f": i / 3, "s": 'q"\\é\n' * (i % 3), "ls": ["x", 'y"'], "si": [1, 2], "sf": [0.5],
                   "v": [1.0, 2.0, 3.0], **extra}
            msg = v.validate(rec, ttl_seconds=None if i % 5 else 60)
        key, value, headers = encode(msg)
        out.append(RawMessage(f"{PREFIX}.{group.name}", i % 2, i, key, value, headers))
    return out


def test_good_rows_take_the_columns_and_agree() -> None:
    """Valid puts and deletes are proven by the columns (else the test above would compare the
    per-record path with itself), group "b"'s event times given as integers and as doubles included."""
    for name in ("a", "b"):
        batch = _good_batch(ONLINE_GROUPS[name], 60)
        routed, _ = route_batch_columns(batch, GroupView(lambda: dict(ONLINE_GROUPS)), prefix=PREFIX,
                                        store="OnlineStore", columns_from=1)
        assert not routed.work and not routed.poison and len(routed.rows[name].rows) == 60
        assert _batch_path(batch) == _per_record(batch)


def test_an_expiry_beyond_int64_is_computed_exactly() -> None:
    """event time + TTL past 2**63 ns (a put in 2262 with a long TTL) is what Python's integers say."""
    g = ONLINE_GROUPS["a"]
    msg = compile_validator(g).validate({"rid": "r", "et": "2262-04-11T23:47:16.854775807Z"},
                                        ttl_seconds=10**9)
    key, value, headers = encode(msg)
    batch = [RawMessage(f"{PREFIX}.a", 0, 5, key, value, headers)]
    calls, poison = _batch_path(batch)
    assert not poison
    assert calls == _per_record(batch)[0]
    assert calls["a"][0][2][5] == str(9_223_372_036_854_775_807 + 10**18)


def test_a_batch_mixing_proven_and_per_record_rows_keeps_the_write_order() -> None:
    """A hard delete and a put of one key must reach Redis in the order they were written, whichever
    path judged each."""
    g = ONLINE_GROUPS["a"]
    batch = _good_batch(g, 20)
    bad = batch[4]
    obj = orjson.loads(bad.value)
    obj["record"]["et"] = obj["record"]["et"][:-1] + "+00:00"  # valid, but proven only per record
    batch[4] = bad._replace(value=orjson.dumps(obj))
    routed, _ = route_batch_columns(batch, GroupView(lambda: dict(ONLINE_GROUPS)), prefix=PREFIX,
                                    store="OnlineStore", columns_from=1)
    assert len(routed.work["a"]) == 1
    calls, poison = _batch_path(batch)
    assert not poison
    assert [a[3] for _i, _k, a in calls["a"]] == [str(i) for i in range(20)]
    assert (calls, poison) == _per_record(batch)


def test_a_topic_with_few_messages_in_the_batch_is_judged_per_record_with_the_same_calls() -> None:
    """Below COLUMNS_MIN_ROWS a topic's messages skip the columns (their fixed cost, streams/route.py);
    from it on they take them; either way the calls are the columns' and the per-record path's."""
    g = ONLINE_GROUPS["a"]
    view = GroupView(lambda: dict(ONLINE_GROUPS))
    few, many = _good_batch(g, COLUMNS_MIN_ROWS - 1), _good_batch(g, COLUMNS_MIN_ROWS)
    routed, _ = route_batch_columns(few, view, prefix=PREFIX, store="OnlineStore")
    assert not routed.rows and len(routed.work["a"]) == COLUMNS_MIN_ROWS - 1
    routed, _ = route_batch_columns(many, view, prefix=PREFIX, store="OnlineStore")
    assert not routed.work and len(routed.rows["a"].rows) == COLUMNS_MIN_ROWS
    for batch in (few, many):
        assert _batch_path(batch, COLUMNS_MIN_ROWS) == _batch_path(batch) == _per_record(batch)
