"""Feature values ⇄ hash fields, and decoding a stored hash into what GetRecord serves."""

import math

import orjson
import pytest

from schemas.errors import RecordValidationError
from schemas.group import FeatureGroup
from schemas.types import FeatureDefinition as F
from sinks.online.codec import decode_int_meta, decode_record, decode_value, encode_features
from sinks.online.errors import CorruptRecordError

GROUP = FeatureGroup("customers", "cid", "et", (
    F("cid", "String"), F("et", "String"), F("age", "Integral"), F("score", "Fractional"),
    F("tags", "String", "List"), F("ids", "Integral", "Set"), F("emb", "Fractional", "Vector", 3)))
NOW = 2_000_000_000_000_000_000


def pairs(fields):
    return dict(zip(fields[::2], fields[1::2], strict=True))


def test_types_round_trip_and_nulls_are_absent():
    record = {"cid": "42", "et": "2021-10-02T12:00:00Z", "age": 42, "score": 0.75, "tags": ["a", "b"],
              "ids": [1, 2], "emb": [0.1, 0.2, 0.3]}
    fields = pairs(encode_features(GROUP, "42", {**record, "score": None} | {"score": 0.75}))
    assert fields["cid"] == '"42"' and fields["age"] == "42"  # "42" the string vs 42 the int
    raw = {b"__et": b"1", **{k.encode(): v.encode() for k, v in fields.items()}}
    got, exp = decode_record(GROUP, "42", raw, NOW)
    assert got == record and exp is None
    assert "age" not in pairs(encode_features(GROUP, "42", {"cid": "42", "age": None}))


def test_fractional_whole_numbers_come_back_as_float():
    assert decode_value(GROUP, "r", GROUP.feature("score"), b"2") == 2.0
    assert isinstance(decode_value(GROUP, "r", GROUP.feature("emb"), b"[1,2,3]")[0], float)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, [1.0, math.nan, 2.0]])
def test_non_finite_numbers_are_refused_not_turned_into_null(value):
    with pytest.raises(RecordValidationError, match="'score'.*not a finite number"):
        encode_features(GROUP, "r1", {"score": value})


@pytest.mark.parametrize("value", [b"bytes", object(), {1, 2}, 2**64, {"nested": object()}])
def test_unencodable_values_name_group_feature_and_value(value):
    with pytest.raises(RecordValidationError) as info:
        encode_features(GROUP, "r1", {"tags": value})
    msg = str(info.value)
    assert "customers" in msg and "'tags'" in msg and "cannot be stored" in msg
    assert info.value.feature == "tags"


def test_unknown_feature_is_refused_with_valid_names():
    with pytest.raises(RecordValidationError, match="unknown feature 'nope'; valid features are cid"):
        encode_features(GROUP, "r1", {"nope": 1})


def test_huge_value_is_refused():
    with pytest.raises(RecordValidationError, match="bytes encoded; at most"):
        encode_features(GROUP, "r1", {"cid": "x" * 400_000})


def test_record_must_be_a_mapping():
    with pytest.raises(RecordValidationError, match="must be a mapping"):
        encode_features(GROUP, "r1", [("cid", "x")])


@pytest.mark.parametrize("feature,raw", [
    ("age", b"not json"), ("age", b"\xff\xfe"), ("age", b'"42"'), ("age", b"1.5"), ("age", b"true"),
    ("age", str(2**63).encode()), ("cid", b"42"), ("score", b'"0.5"'), ("tags", b'"a"'),
    ("tags", b"[1]"), ("emb", b"[1.0,2.0]"), ("emb", b"[1,2,\"x\"]"), ("ids", b"null"),
])
def test_garbage_stored_values_raise_corrupt_record(feature, raw):
    with pytest.raises(CorruptRecordError) as info:
        decode_value(GROUP, "r1", GROUP.feature(feature), raw)
    msg = str(info.value)
    assert "customers" in msg and "'r1'" in msg and repr(feature) in msg
    assert GROUP.feature(feature).describe() in msg


def test_missing_key_tombstones_and_expired_records_are_none():
    assert decode_record(GROUP, "r", {}, NOW) is None
    assert decode_record(GROUP, "r", {"__et": None, "age": None}, NOW) is None  # HMGET of no key
    assert decode_record(GROUP, "r", {b"__et": b"5", b"__seq": b"0:1", b"__del": b"1"}, NOW) is None
    assert decode_record(GROUP, "r", {b"__et": b"5", b"__del": b"expired"}, NOW) is None
    live = {b"__et": b"5", b"__exp": str(NOW + 1).encode(), b"age": b"1"}
    assert decode_record(GROUP, "r", live, NOW) == ({"age": 1}, NOW + 1)
    assert decode_record(GROUP, "r", live, NOW + 1) is None  # at expiry, before Redis evicts


def test_fields_of_no_feature_are_ignored():
    assert decode_record(GROUP, "r", {b"__et": b"5", b"__v": b"1", b"dropped": b"??"}, NOW) == ({}, None)


def test_hash_without_event_time_is_corrupt():
    with pytest.raises(CorruptRecordError, match="no __et meta field"):
        decode_record(GROUP, "r", {b"age": b"1"}, NOW)


@pytest.mark.parametrize("raw", [b"", b"abc", b"1.5", b"--1", b"1e9", "١٢".encode()])
def test_bad_meta_integers_are_corrupt(raw):
    with pytest.raises(CorruptRecordError, match="__exp"):
        decode_int_meta(GROUP, "r", "__exp", raw)


def test_meta_integers_exact_and_signed():
    assert decode_int_meta(GROUP, "r", "__et", b"9223372036854775807") == 2**63 - 1
    assert decode_int_meta(GROUP, "r", "__et", b"-5") == -5
    assert decode_int_meta(GROUP, "r", "__et", None) is None


def test_encoded_values_are_plain_json():
    fields = pairs(encode_features(GROUP, "r", {"tags": ["a", "é"]}))
    assert orjson.loads(fields["tags"]) == ["a", "é"]


def test_pack_checked_features_matches_the_checked_encoding_for_valid_records():
    from schemas.validate import compile_validator
    from sinks.online.codec import encode_features, pack_checked_features, pack_fields
    from tests.integration.helpers import customer, customers_group

    group = customers_group("c")
    validator = compile_validator(group)
    for i in range(50):
        rec = customer(i, second=i)
        rec["city"] = None if i % 3 == 0 else 'quote " and ünïcode'
        msg = validator.validate(rec)
        assert pack_checked_features(msg.record) == pack_fields(encode_features(group, msg.id, msg.record))
