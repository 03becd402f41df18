"""Pure parts of streams/: row sources, chunk validation+encoding, routing, the registry fold."""

from __future__ import annotations

import math

import orjson
import pandas as pd
import pyarrow as pa
import pytest

from schemas.group import FeatureGroup
from schemas.messages import PutMessage
from schemas.types import FeatureDefinition, ScalarType
from schemas.validate import compile_validator
from schemas.wire import decode, encode
from streams.group_view import GroupView
from streams.ingest import encode_chunk
from streams.registry import Registry
from streams.route import RawMessage, route, route_batch
from streams.rowsource import iter_chunks


def _group(name: str = "customers", **kw) -> FeatureGroup:
    feats = (
        FeatureDefinition("customer_id", ScalarType.STRING),
        FeatureDefinition("event_time", ScalarType.STRING),
        FeatureDefinition("age", ScalarType.INTEGRAL),
        FeatureDefinition("score", ScalarType.FRACTIONAL),
    )
    return FeatureGroup(name=name, record_identifier_name="customer_id", event_time_name="event_time",
                        features=feats, **kw)


ROWS = [
    {"customer_id": "c1", "event_time": "2021-10-02T12:00:00Z", "age": 42, "score": 0.5},
    {"customer_id": "c2", "event_time": "2021-10-02T12:00:01Z", "age": None, "score": 1.5},
]


def test_chunks_from_dicts_frames_and_arrow_agree() -> None:
    frame = pd.DataFrame(ROWS)
    table = pa.Table.from_pylist(ROWS)
    validator = compile_validator(_group())
    outs = []
    for data in (ROWS, frame, table):
        encoded = []
        for chunk in iter_chunks(data, chunk_size=1):
            enc, rejects = encode_chunk(validator, chunk)
            assert rejects == []
            encoded += enc
        outs.append([decode(k, v, h).record for k, v, h in encoded])
    assert outs[0] == outs[1] == outs[2]
    assert outs[0][1]["age"] is None


def test_frame_nan_means_missing_but_dict_nan_is_rejected() -> None:
    validator = compile_validator(_group())
    frame = pd.DataFrame([{**ROWS[0], "score": math.nan}])
    (chunk,) = iter_chunks(frame)
    enc, rejects = encode_chunk(validator, chunk)
    assert not rejects and decode(*enc[0]).record["score"] is None
    (chunk,) = iter_chunks([{**ROWS[0], "score": math.nan}])
    enc, rejects = encode_chunk(validator, chunk)
    assert enc == [] and len(rejects) == 1
    assert rejects[0].feature == "score" and "NaN" in rejects[0].reason


def test_bad_rows_are_reported_with_their_index_and_the_rest_encoded() -> None:
    validator = compile_validator(_group())
    data = [ROWS[0], {"event_time": "2021-10-02T12:00:00Z"}, "not a dict", {**ROWS[1], "age": 2**70},
            {**ROWS[1], "bogus": 1}, ROWS[1]]
    encoded, rejects = [], []
    for chunk in iter_chunks(data, chunk_size=4):
        e, r = encode_chunk(validator, chunk)
        encoded += e
        rejects += r
    assert [r.index for r in rejects] == [1, 2, 3, 4]
    assert "customer_id" in rejects[0].reason
    assert "str" in rejects[1].reason and "dict" in rejects[1].reason
    assert rejects[2].feature == "age"
    assert "bogus" in rejects[3].reason
    assert len(encoded) == 2


def test_datetime_columns_become_iso_strings() -> None:
    frame = pd.DataFrame({"customer_id": ["c1"], "event_time": pd.to_datetime(["2021-10-02 12:00:00.5"]),
                          "age": [1], "score": [2.0]})
    (chunk,) = iter_chunks(frame)
    assert chunk[2][0][1] == "2021-10-02T12:00:00.5Z"


def test_iter_chunks_refuses_a_single_dict_and_scalars() -> None:
    with pytest.raises(TypeError, match="put_record"):
        list(iter_chunks(ROWS[0]))
    with pytest.raises(TypeError, match="DataFrame"):
        list(iter_chunks(42))


def _raw(topic: str, value: bytes | None, offset: int = 0, key: bytes | None = b"c1", headers=None) -> RawMessage:
    return RawMessage(topic, 0, offset, key, value, headers or [])


def test_route_sorts_work_and_poison() -> None:
    g = _group()
    msg = compile_validator(g).validate(ROWS[0])
    key, value, headers = encode(msg)
    offline_only = compile_validator(g).validate(ROWS[1], target_stores=["OfflineStore"])
    k2, v2, h2 = encode(offline_only)
    batch = [
        _raw("p.customers", value, 0, key, headers),
        _raw("p.customers", b"\xff\x00garbage", 1),
        _raw("p.nosuch", value, 2, key, headers),
        _raw("p._registry", b"{}", 3),
        _raw("p.customers", v2, 4, k2, h2),
        _raw("p.customers", orjson.dumps({"op": "put", "id": "c1", "event_time_ns": 1,
                                          "record": {"customer_id": "c1", "age": "x"}}), 5, b"c1",
             [("fs-format", b"json/1")]),
    ]
    routed = route(batch, {"customers": g}, prefix="p", store="OnlineStore")
    assert [(m.id, o) for m, _, o in routed.work["customers"]] == [("c1", 0)]
    assert isinstance(routed.work["customers"][0][0], PutMessage)
    assert [p.raw.offset for p in routed.poison] == [1, 2, 5]
    assert "nosuch" in routed.poison[1].reason
    assert routed.unknown_groups == {"nosuch"}
    assert routed.skipped == 2  # registry placeholder + offline-only record
    offline = route(batch, {"customers": g}, prefix="p", store="OfflineStore")
    assert [o for _, _, o in offline.work["customers"]] == [0, 4]


def test_offline_api_invocation_time_is_the_brokers_append_time() -> None:
    g = _group()
    msg = compile_validator(g).validate(ROWS[0], api_invocation_time_ns=7)
    key, value, headers = encode(msg)
    appended = RawMessage("p.customers", 0, 0, key, value, headers, 1_700_000_000_123, True)
    created = RawMessage("p.customers", 0, 1, key, value, headers, 1_700_000_000_456, False)
    offline = route([appended, created], {"customers": g}, prefix="p", store="OfflineStore")
    got = [m.api_invocation_time_ns for m, _, _ in offline.work["customers"]]
    # a LogAppendTime topic: the broker's time, in ns; a CreateTime topic: the client's, as sent
    assert got == [1_700_000_000_123_000_000, 7]
    online = route([appended], {"customers": g}, prefix="p", store="OnlineStore")
    assert online.work["customers"][0][0] is not None and online.work["customers"][0][0].api_invocation_time_ns == 7


def test_route_skips_groups_whose_store_is_disabled() -> None:
    g = _group(online_enabled=False)
    key, value, headers = encode(compile_validator(g).validate(ROWS[0]))
    routed = route([_raw("p.customers", value, 0, key, headers)], {"customers": g}, prefix="p",
                   store="OnlineStore")
    assert routed.work == {} and routed.skipped == 1


def _with_w(g: FeatureGroup) -> FeatureGroup:
    return g.with_added_features([FeatureDefinition("w", ScalarType.INTEGRAL)])


def test_a_message_of_a_newer_version_waits_for_it_and_is_never_dead_lettered() -> None:
    v1 = _group()
    v2 = _with_w(v1)
    new = encode(compile_validator(v2).validate({**ROWS[0], "w": 7}))
    old = encode(compile_validator(v1).validate(ROWS[1]))
    batch = [_raw("p.customers", new[1], 0, new[0], new[2]), _raw("p.customers", old[1], 1, old[0], old[2])]
    # A view still at version 1 judges nothing of the group: it names the group as behind.
    first = route(batch, {"customers": v1}, prefix="p", store="OnlineStore")
    assert first.behind == {"customers"} and not first.poison and not first.complete
    for store in ("OnlineStore", "OfflineStore"):
        # the registry answers version 1 first, then (asked again) version 2
        view = GroupView(iter([{"customers": v1}, {"customers": v2}]).__next__, max_age_s=3600)
        routed, groups = route_batch(batch, view, prefix="p", store=store)
        assert groups["customers"].version == 2 and routed.complete and not routed.poison
        got = [(m.id, m.record["w"], m.schema_version) for m, _, _ in routed.work["customers"]]
        # the older message is checked against the newer definition: its new feature is null
        assert got == [("c1", 7, 2), ("c2", None, 1)]


def test_a_version_the_registry_never_had_is_dead_lettered_with_the_reason() -> None:
    v1 = _group()
    forged = encode(compile_validator(_with_w(v1)).validate({**ROWS[0], "w": 7}))
    view = GroupView(lambda: {"customers": v1}, max_age_s=3600)
    routed, _ = route_batch([_raw("p.customers", forged[1], 0, forged[0], forged[2])], view, prefix="p",
                            store="OnlineStore")
    assert routed.work == {} and len(routed.poison) == 1
    assert "version 2 of feature group 'customers'" in routed.poison[0].reason
    assert "registry's latest is version 1" in routed.poison[0].reason


def test_registry_fold_is_compare_and_set() -> None:
    reg = Registry("127.0.0.1:1", prefix="p")
    v1 = _group(creation_time=1.0)
    rival = _group(creation_time=2.0)
    reg.fold(b"customers", orjson.dumps(v1.to_dict()))
    reg.fold(b"customers", orjson.dumps(rival.to_dict()))  # a second "create": loses
    assert reg._groups["customers"].creation_time == 1.0
    v2 = v1.with_ttl(None) if v1.ttl else v1.with_added_features([FeatureDefinition("x", ScalarType.STRING)])
    reg.fold(b"customers", orjson.dumps(v2.to_dict()))
    assert reg._groups["customers"].version == 2
    reg.fold(b"customers", b"not json")  # corrupt entries never break readers
    assert reg._groups["customers"].version == 2
    reg.fold(b"customers", None)
    assert "customers" not in reg._groups


@pytest.mark.parametrize("columns_from", [None, 1])  # route (per record), and route_columns (the batch way)
def test_a_topic_of_another_life_is_left_alone_or_waited_for_never_applied_to_this_life(columns_from) -> None:
    from streams.route import route_batch_columns

    first = _group(creation_time=1.0)
    second = _group(creation_time=2.0, topic_life="2000000")
    key, value, headers = encode(compile_validator(second).validate(ROWS[0]))
    old_life = [_raw("p.customers", value, k, key, headers) for k in range(3)]
    new_life = [_raw("p.customers._2000000", value, k, key, headers) for k in range(2)]

    def routed_by(answers: list[dict[str, FeatureGroup]]):
        view = GroupView(iter(answers).__next__, max_age_s=3600)
        if columns_from is None:
            return route_batch(old_life + new_life, view, prefix="p", store="OnlineStore")[0]
        return route_batch_columns(old_life + new_life, view, prefix="p", store="OnlineStore",
                                   columns_from=columns_from)[0]

    # The view has the second life: the first life's messages are left alone, not dead-lettered.
    routed = routed_by([{"customers": second}])
    assert routed.earlier_life == 3 and routed.skipped == 3 and not routed.poison and routed.complete
    applied = [o for _, _, o in routed.work.get("customers", [])]
    if columns_from is not None:
        applied += routed.rows["customers"].offsets.tolist()
        assert routed.rows["customers"].topic == "p.customers._2000000"
    assert sorted(applied) == [0, 1]
    # A view still on the first life waits for the registry: nothing of the second life is judged by it.
    behind = routed_by([{"customers": first}, {"customers": second}])
    assert behind.complete and not behind.poison and behind.earlier_life == 3
    # The registry's latest has no such life: the messages are poison, with the reason.
    never = routed_by([{"customers": first}, {"customers": first}])
    assert [p.raw.topic for p in never.poison] == ["p.customers._2000000"] * 2
    assert "a life of feature group 'customers' that the registry does not have" in never.poison[0].reason
    assert "'p.customers'" in never.poison[0].reason
    assert [o for _, _, o in never.work.get("customers", [])] + (
        never.rows["customers"].offsets.tolist() if "customers" in getattr(never, "rows", {}) else []) == [0, 1, 2]

