from collections import OrderedDict
from datetime import UTC, datetime
from decimal import Decimal

import numpy as np
import pandas as pd
import pytest

from schemas.errors import RecordValidationError
from schemas.group import FeatureGroup
from schemas.messages import BOTH_STORES, OFFLINE, ONLINE, DeleteMessage, PutMessage
from schemas.names import MAX_RECORD_BYTES, MAX_VALUE_BYTES
from schemas.types import FeatureDefinition as F
from schemas.validate import compile_validator, validate_delete, validate_record

T0 = 1633176000 * 10**9
ET = "2021-10-02T12:00:00Z"

GROUP = FeatureGroup("customers", "id", "et", (
    F("id", "String"), F("et", "String"), F("age", "Integral"), F("score", "Fractional"),
    F("name", "String"), F("tags", "String", "List"), F("ids", "Integral", "Set"),
    F("weights", "Fractional", "List"), F("emb", "Fractional", "Vector", 3), F("labels", "String", "Set"),
))


def put(**values):
    return validate_record(GROUP, {"id": "c-1", "et": ET, **values})


def bad(match, **values):
    with pytest.raises(RecordValidationError, match=match) as exc:
        put(**values)
    assert "'customers'" in str(exc.value)
    assert exc.value.group == "customers"
    return exc.value


def test_full_record_canonical():
    m = put(age=42, score=0.75, name="Ann", tags=["a", "b"], ids=[3, 1], weights=[0.5, 1.5],
            emb=[0.1, 0.2, 0.3], labels=["x"])
    assert isinstance(m, PutMessage)
    assert m.id == "c-1" and m.event_time_ns == T0 and m.target_stores == BOTH_STORES
    assert m.record == {"id": "c-1", "et": ET, "age": 42, "score": 0.75, "name": "Ann", "tags": ["a", "b"],
                        "ids": [3, 1], "weights": [0.5, 1.5], "emb": [0.1, 0.2, 0.3], "labels": ["x"]}
    assert list(m.record) == list(GROUP.feature_names)  # group order


def test_missing_features_are_null():
    m = put()
    assert m.record["age"] is None and m.record["emb"] is None
    assert len(m.record) == len(GROUP.features)
    assert put(age=None, name=pd.NA).record["name"] is None


def test_result_does_not_alias_caller_lists():
    tags = ["a"]
    m = put(tags=tags)
    tags.append("b")
    assert m.record["tags"] == ["a"]


@pytest.mark.parametrize("given,stored", [
    (42, 42), ("42", 42), ("-7", -7), ("+7", 7), (" 8 ", 8), (True, 1), (False, 0), (42.0, 42),
    (np.int32(5), 5), (np.uint8(5), 5), (np.int64(2**63 - 1), 2**63 - 1), (np.bool_(True), 1),
    (np.float64(3.0), 3), (Decimal("12"), 12), (-(2**63), -(2**63)), (2**63 - 1, 2**63 - 1),
])
def test_integral_coercion(given, stored):
    out = put(age=given).record["age"]
    assert out == stored and type(out) is int


@pytest.mark.parametrize("given,match", [
    (3.5, "not a whole number"), ("3.5", "non-integer"), ("abc", "not an integer"), ("", "not an integer"),
    ("1_000", "not an integer"), ("٣", "not an integer"), (2**63, "64-bit"), (-(2**63) - 1, "64-bit"),
    ("9223372036854775808", "64-bit"), ("9" * 5000, "64-bit"), (float("nan"), "finite"),
    (float("inf"), "finite"), (1e30, "64-bit"), (np.uint64(2**64 - 1), "64-bit"), ([1], "not an integer"),
    (b"42", "not an integer"), (Decimal("1.5"), "whole"), (object(), "not an integer"),
])
def test_integral_rejects(given, match):
    err = bad(match, age=given)
    assert err.feature == "age" and "(Integral)" in str(err) and "signed 64-bit" in str(err)


@pytest.mark.parametrize("given,stored", [
    (0.75, 0.75), (1, 1.0), ("0.75", 0.75), ("-1e3", -1000.0), (np.float32(0.5), 0.5),
    (np.int64(3), 3.0), (Decimal("2.5"), 2.5), (1e308, 1e308), (-0.0, -0.0),
])
def test_fractional_coercion(given, stored):
    out = put(score=given).record["score"]
    assert out == stored and type(out) is float


@pytest.mark.parametrize("given,match", [
    (float("nan"), "NaN"), (float("inf"), "NaN and infinity"), (float("-inf"), "infinity"),
    (np.float64("nan"), "NaN"), ("nan", "not a decimal number"), ("inf", "not a decimal number"),
    ("1e999", "NaN and infinity|not finite"), (10**400, "too large"), (True, "bool is not Fractional"),
    (np.bool_(False), "bool is not Fractional"), ("abc", "not a decimal number"), ([0.5], "not a number"),
    (None.__class__, "not a number"),
])
def test_fractional_rejects(given, match):
    err = bad(match, score=given)
    assert err.feature == "score"


@pytest.mark.parametrize("given,match", [
    (42, "not text"), (4.2, "not text"), (b"x", "bytes are not text"), (["a"], "not text"),
    (True, "not text"), ("\ud800", "not valid Unicode"),
])
def test_string_rejects(given, match):
    err = bad(match, name=given)
    assert "pass '42' if you mean text" in str(err) or "Unicode" in str(err)


def test_string_subclass_accepted():
    assert put(name=np.str_("x")).record["name"] == "x"


def test_value_size_limit_exact_at_boundary():
    # a value of exactly the limit passes the value check (and then fails the record limit,
    # which also counts the id and event time)
    bad("a record is at most", name="x" * MAX_VALUE_BYTES)
    err = bad("358401 bytes", name="x" * (MAX_VALUE_BYTES + 1))
    assert len(str(err)) < 1000  # the huge value is truncated in the message
    # multi-byte: 2 bytes per char
    assert put(name="é" * ((MAX_VALUE_BYTES - 23) // 2)).record["name"]
    bad("bytes of UTF-8", name="é" * (MAX_VALUE_BYTES // 2 + 1))


def test_record_size_limit_sums_values():
    half = MAX_RECORD_BYTES // 2
    with pytest.raises(RecordValidationError, match=f"at most {MAX_RECORD_BYTES} bytes") as exc:
        put(name="x" * half, tags=["y" * half])
    assert len(str(exc.value)) < 1000
    # exactly at the limit: id 'c-1' (3) + et (20) + name + tags
    rest = MAX_RECORD_BYTES - 3 - len(ET)
    assert put(name="x" * (rest - 10), tags=["y" * 10])
    with pytest.raises(RecordValidationError, match="record"):
        put(name="x" * (rest - 10), tags=["y" * 11])


def test_numbers_count_exactly_at_boundary():
    # estimates (24 bytes per float) would exceed; the exact text size does not
    rest = MAX_RECORD_BYTES - 3 - len(ET)
    m = put(name="x" * (rest - 3 * 3), emb=[0.5, 0.5, 0.5])  # '0.5' is 3 bytes
    assert m.record["emb"] == [0.5, 0.5, 0.5]
    with pytest.raises(RecordValidationError, match="record"):
        put(name="x" * (rest - 3 * 3 + 1), emb=[0.5, 0.5, 0.5])


def test_collections_ok():
    m = put(tags=("a", "b", "a"), ids={3, 1, 2}, weights=np.array([1.0, 2.0]), emb=np.array([1, 2, 3]),
            labels=frozenset({"b", "a"}))
    assert m.record["tags"] == ["a", "b", "a"]  # List keeps duplicates and order
    assert m.record["ids"] == [1, 2, 3]         # a set input is sorted for determinism
    assert m.record["weights"] == [1.0, 2.0]
    assert m.record["emb"] == [1.0, 2.0, 3.0] and all(type(x) is float for x in m.record["emb"])
    assert m.record["labels"] == ["a", "b"]
    assert put(tags=[]).record["tags"] == []


@pytest.mark.parametrize("values,match", [
    (dict(tags="ab"), "must be a list of values, not str"),
    (dict(tags={"a": 1}), "not dict"),
    (dict(tags={"a"}), "no order"),
    (dict(tags=["a", None]), "element 1 is missing"),
    (dict(tags=["a", 1]), "element 1 1 \\(int\\) is invalid: it is not text"),
    (dict(ids=[1, 1]), "contains 1 more than once"),
    (dict(ids=["1", 1]), "contains 1 more than once"),
    (dict(ids=[1, True]), "more than once"),
    (dict(labels=["a", "a"]), "'a' more than once"),
    (dict(ids=[1, 2**63]), "64-bit"),
    (dict(weights=[1.0, float("nan")]), "element 1 nan"),
    (dict(weights=[float("inf")]), "NaN and infinity"),
    (dict(emb=[0.1, 0.2]), "has 2 elements; this Vector has dimension 3"),
    (dict(emb=[0.1, 0.2, 0.3, 0.4]), "dimension 3"),
    (dict(emb=[0.1, 0.2, float("nan")]), "NaN"),
    (dict(emb=[0.1, 0.2, float("inf")]), "NaN"),
    (dict(emb=[1e308, 1e308, -1e308]), None),  # finite elements whose sum overflows: valid
    (dict(emb=[0.1, None, 0.3]), "element 1 is missing"),
    (dict(emb=[0.1, True, 0.3]), "bool"),
    (dict(emb=[0.1, "x", 0.3]), "not a decimal number"),
    (dict(emb=np.zeros((3, 1))), "list or tuple"),
    (dict(emb=5.0), "list or tuple"),
    (dict(tags=[["a"]]), "not text"),
])
def test_collection_rejects(values, match):
    if match is None:
        assert put(**values)
        return
    err = bad(match, **values)
    assert err.feature == next(iter(values))


def test_large_vector_and_list_size():
    g = FeatureGroup("vecs", "id", "et", (F("id", "String"), F("et", "String"),
                                          F("v", "Fractional", "Vector", 8192), F("l", "String", "List")))
    v = compile_validator(g)
    assert len(v.validate({"id": "a", "et": ET, "v": [0.1] * 8192}).record["v"]) == 8192
    with pytest.raises(RecordValidationError, match="at most 358400 bytes"):
        v.validate({"id": "a", "et": ET, "l": ["x" * 1000] * 400})


@pytest.mark.parametrize("record,match", [
    ({"et": ET}, "record identifier is missing"),
    ({"id": None, "et": ET}, "record identifier is missing"),
    ({"id": "", "et": ET}, "empty"),
    ({"id": 42, "et": ET}, "not text"),
    ({"id": "x" * 2049, "et": ET}, "at most 2048 bytes"),
    ({"id": "é" * 1025, "et": ET}, "2050 bytes"),
    ({"id": "\udc80", "et": ET}, "Unicode"),
    ({"id": "c"}, "event time is missing"),
    ({"id": "c", "et": None}, "event time is missing"),
    ({"id": "c", "et": "2021-10-02T12:00:00"}, "add Z"),
    ({"id": "c", "et": "garbage"}, "not an ISO-8601"),
    ({"id": "c", "et": float("nan")}, "finite"),
    ({"id": "c", "et": True}, "boolean"),
    ({"id": "c", "et": -5}, "out of range"),
    ({"id": "c", "et": ET, "agee": 1}, "has no feature 'agee'; its features are id, et, age"),
    ({"id": "c", "et": ET, 7: 1}, "has no feature 7"),
])
def test_identifier_event_time_unknown(record, match):
    with pytest.raises(RecordValidationError, match=match) as exc:
        validate_record(GROUP, record)
    assert exc.value.group == "customers"


def test_identifier_max_size_ok():
    assert put(id="x" * 2048).id == "x" * 2048


@pytest.mark.parametrize("record", [None, [("id", "c")], "id=c", 42])
def test_record_not_a_mapping(record):
    with pytest.raises(RecordValidationError, match="must be a mapping"):
        validate_record(GROUP, record)


def test_mapping_types_accepted():
    assert validate_record(GROUP, OrderedDict(id="c", et=ET)).id == "c"


INT_GROUP = FeatureGroup("orders", "order_id", "ts", (F("order_id", "Integral"), F("ts", "Fractional"),
                                                       F("total", "Fractional")))


@pytest.mark.parametrize("given,rid", [(42, "42"), ("42", "42"), (-7, "-7"), (np.int64(9), "9"), ("007", "7")])
def test_integral_identifier_text(given, rid):
    m = validate_record(INT_GROUP, {"order_id": given, "ts": 1633176000})
    assert m.id == rid and m.record["order_id"] == int(rid)


@pytest.mark.parametrize("given", ["abc", 1.5, 2**63, None, ""])
def test_integral_identifier_rejects(given):
    with pytest.raises(RecordValidationError, match="order_id"):
        validate_record(INT_GROUP, {"order_id": given, "ts": 1633176000})


@pytest.mark.parametrize("given,stored,ns", [
    (1633176000, 1633176000, T0),
    (1633176000.123, 1633176000.123, T0 + 123_000_000),
    ("1633176000.5", "1633176000.5", T0 + 500_000_000),          # kept exactly as given
    ("2021-10-02T12:00:00Z", "2021-10-02T12:00:00Z", T0),
    (datetime(2021, 10, 2, 12, 0, 0, 250000, tzinfo=UTC), 1633176000.25, T0 + 250_000_000),
    (np.float64(1633176000.0), 1633176000, T0),
])
def test_event_time_kept_as_given(given, stored, ns):
    m = validate_record(INT_GROUP, {"order_id": 1, "ts": given})
    assert m.record["ts"] == stored and type(m.record["ts"]) is type(stored)
    assert m.event_time_ns == ns


def test_datetime_event_time_on_string_feature_becomes_iso():
    m = put(et=pd.Timestamp("2021-10-02T12:00:00.5Z"))
    assert m.record["et"] == "2021-10-02T12:00:00.5Z" and m.event_time_ns == T0 + 500_000_000


def test_target_stores_and_ttl_and_invocation_time():
    m = validate_record(GROUP, {"id": "c", "et": ET}, target_stores=["OnlineStore"], ttl_seconds=60,
                        api_invocation_time_ns=5)
    assert m.target_stores == frozenset({ONLINE}) and m.ttl_seconds == 60 and m.api_invocation_time_ns == 5
    assert validate_record(GROUP, {"id": "c", "et": ET}, target_stores=(OFFLINE, ONLINE)).target_stores == BOTH_STORES


@pytest.mark.parametrize("kw,match", [
    (dict(target_stores=[]), "non-empty"),
    (dict(target_stores="OnlineStore"), "must be a list"),
    (dict(target_stores=["Online"]), "non-empty list of 'OnlineStore'"),
    (dict(target_stores=5), "must be a list"),
    (dict(ttl_seconds=0), "ttl_seconds"),
    (dict(ttl_seconds=-1), "ttl_seconds"),
    (dict(ttl_seconds=1.5), "ttl_seconds"),
    (dict(ttl_seconds=True), "ttl_seconds"),
    (dict(ttl_seconds=10**15), "ttl_seconds"),
    (dict(api_invocation_time_ns=-1), "api_invocation_time_ns"),
    (dict(api_invocation_time_ns="now"), "api_invocation_time_ns"),
])
def test_put_options_rejected(kw, match):
    with pytest.raises(RecordValidationError, match=match):
        validate_record(GROUP, {"id": "c", "et": ET}, **kw)


def test_target_store_must_be_enabled():
    g = FeatureGroup("online_only", "id", "et", (F("id", "String"), F("et", "String")), offline_enabled=False)
    assert validate_record(g, {"id": "c", "et": ET}).target_stores == frozenset({ONLINE})
    with pytest.raises(RecordValidationError, match="OfflineStore is not enabled"):
        validate_record(g, {"id": "c", "et": ET}, target_stores=[OFFLINE])


def test_schema_version_recorded_and_validator_cached():
    g = GROUP.with_added_features([F("city", "String")])
    assert validate_record(g, {"id": "c", "et": ET, "city": "x"}).schema_version == 2
    assert compile_validator(g) is compile_validator(g)
    with pytest.raises(RecordValidationError, match="has no feature 'city'"):
        validate_record(GROUP, {"id": "c", "et": ET, "city": "x"})


def test_validate_delete():
    d = validate_delete(GROUP, "c-1", ET, mode="HardDelete", target_stores=["OnlineStore"],
                        api_invocation_time_ns=9)
    assert isinstance(d, DeleteMessage)
    assert (d.id, d.event_time_ns, d.event_time, d.mode, d.target_stores, d.api_invocation_time_ns) == \
        ("c-1", T0, ET, "HardDelete", frozenset({ONLINE}), 9)
    assert validate_delete(INT_GROUP, "42", 1633176000.5).id == "42"


@pytest.mark.parametrize("args,kw,match", [
    (("c", ET), dict(mode="Soft"), "delete mode"),
    (("c", None), {}, "event time is missing"),
    (("c", "2021-10-02"), {}, "not an ISO-8601"),
    ((None, ET), {}, "identifier is missing"),
    (("", ET), {}, "empty"),
    (("c", ET), dict(target_stores=[]), "non-empty"),
    (("c", ET), dict(api_invocation_time_ns=-3), "api_invocation_time_ns"),
])
def test_validate_delete_rejects(args, kw, match):
    with pytest.raises(RecordValidationError, match=match):
        validate_delete(GROUP, *args, **kw)
