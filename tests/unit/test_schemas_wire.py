import orjson
import pytest

from schemas.errors import RecordValidationError, WireFormatError
from schemas.group import FeatureGroup
from schemas.messages import ONLINE, DeleteMessage, PutMessage
from schemas.types import FeatureDefinition as F
from schemas.validate import validate_delete, validate_record
from schemas.wire import check_against_group, decode, encode, encode_value

G = FeatureGroup("customers", "customer_id", "event_time", (
    F("customer_id", "String"), F("event_time", "String"), F("age", "Integral"), F("score", "Fractional"),
    F("tags", "String", "List"), F("embedding", "Fractional", "Vector", 3), F("nickname", "String")))
REC = {"customer_id": "c-42", "event_time": "2021-10-02T12:00:00.123456789Z", "age": 42, "score": 0.75,
       "tags": ["a", "b"], "embedding": [0.1, 0.2, 0.3]}


def put_msg(**kw):
    return validate_record(G, REC, api_invocation_time_ns=1633176001000000000, **kw)


def test_put_matches_documented_example():
    key, value, headers = encode(put_msg())
    assert key == b"c-42"
    assert dict(headers) == {"fs-format": b"json/1", "fs-schema-version": b"1",
                             "fs-api-invocation-time": b"1633176001000000000"}
    assert orjson.loads(value) == {
        "op": "put", "id": "c-42", "event_time_ns": 1633176000123456789,
        "record": {**REC, "nickname": None},
        "target_stores": ["OnlineStore", "OfflineStore"], "ttl_seconds": None}
    assert encode_value(put_msg()) == value


def test_round_trips():
    for msg in (put_msg(), put_msg(target_stores=[ONLINE], ttl_seconds=30),
                validate_delete(G, "c-42", "2021-10-02T13:00:00Z", mode="HardDelete", api_invocation_time_ns=7),
                validate_delete(G, "c-42", 1633179600)):
        back = decode(*encode(msg))
        assert back == msg and type(back) is type(msg)


def test_delete_matches_documented_example():
    msg = validate_delete(G, "c-42", "2021-10-02T13:00:00Z")
    assert orjson.loads(encode(msg)[1]) == {
        "op": "delete", "id": "c-42", "event_time_ns": 1633179600000000000,
        "event_time": "2021-10-02T13:00:00Z", "mode": "SoftDelete",
        "target_stores": ["OnlineStore", "OfflineStore"]}


def test_unknown_fields_ignored_and_headers_optional():
    value = orjson.loads(encode(put_msg())[1])
    value["future_field"] = {"x": 1}
    msg = decode(b"c-42", orjson.dumps(value), None)
    assert msg.id == "c-42" and msg.schema_version == 1 and msg.api_invocation_time_ns == 0
    assert decode(None, orjson.dumps(value), {"fs-format": "json/1"}).id == "c-42"


GOOD = orjson.loads(encode(put_msg())[1])
HEADERS = encode(put_msg())[2]


def variant(**changes):
    v = dict(GOOD)
    for k, val in changes.items():
        if val is ...:
            v.pop(k)
        else:
            v[k] = val
    return orjson.dumps(v)


@pytest.mark.parametrize("key,value,headers,match", [
    (b"c-42", b"\xff\xfe garbage", HEADERS, "not UTF-8 JSON"),
    (b"c-42", b"{not json", HEADERS, "not UTF-8 JSON"),
    (b"c-42", b"", HEADERS, "not UTF-8 JSON"),
    (b"c-42", None, HEADERS, "tombstone"),
    (b"c-42", b"[1, 2]", HEADERS, "JSON list, not an object"),
    (b"c-42", b'"put"', HEADERS, "JSON str"),
    (b"c-42", b'{"op":"put","id":"c-42","event_time_ns":NaN}', HEADERS, "not UTF-8 JSON"),
    (b"c-42", variant(op="upsert"), HEADERS, "'op' is 'upsert'"),
    (b"c-42", variant(op=...), HEADERS, "'op' is None"),
    (b"c-42", variant(id=...), HEADERS, "'id' is None"),
    (b"c-42", variant(id=42), HEADERS, "'id' is 42"),
    (b"c-42", variant(id=""), HEADERS, "'id' is ''"),
    (b"other", variant(), HEADERS, "differs from id"),
    (b"c-42", variant(event_time_ns=...), HEADERS, "event_time_ns"),
    (b"c-42", variant(event_time_ns="1"), HEADERS, "event_time_ns"),
    (b"c-42", variant(event_time_ns=-1), HEADERS, "event_time_ns"),
    (b"c-42", variant(event_time_ns=1.5), HEADERS, "event_time_ns"),
    (b"c-42", variant(event_time_ns=True), HEADERS, "event_time_ns"),
    (b"c-42", variant(record=...), HEADERS, "'record' is NoneType"),
    (b"c-42", variant(record=[1]), HEADERS, "'record' is list"),
    (b"c-42", variant(target_stores=[]), HEADERS, "target_stores"),
    (b"c-42", variant(target_stores=["Disk"]), HEADERS, "target_stores"),
    (b"c-42", variant(target_stores="OnlineStore"), HEADERS, "target_stores"),
    (b"c-42", variant(ttl_seconds=0), HEADERS, "ttl_seconds"),
    (b"c-42", variant(ttl_seconds="5"), HEADERS, "ttl_seconds"),
    (b"c-42", variant(), [("fs-format", b"avro/1")], "understands only 'json/1'"),
    (b"c-42", variant(), [("fs-format", b"json/2")], "understands only"),
    (b"c-42", variant(), [("fs-schema-version", b"x")], "not a decimal integer"),
    (b"c-42", variant(), [("fs-schema-version", b"0")], "out of range"),
    (b"c-42", variant(), [("fs-api-invocation-time", b"-5")], "out of range"),
    (b"c-42", variant(), [("fs-api-invocation-time", b"\xff")], "not a decimal integer"),
    (b"c-42", variant(), "fs-format=json/1", "headers must be a list"),
    (b"c-42", variant(), [("fs-format",)], r"not a \(name, value\) pair"),
    (b"c-42", variant(), [("fs-format", 1)], "int value"),
])
def test_decode_garbage(key, value, headers, match):
    with pytest.raises(WireFormatError, match=match):
        decode(key, value, headers)


DEL = orjson.loads(encode(validate_delete(G, "c-42", "2021-10-02T13:00:00Z"))[1])


@pytest.mark.parametrize("change,match", [
    ({"event_time": None}, "event_time"), ({"event_time": [1]}, "event_time"), ({"event_time": True}, "event_time"),
    ({"mode": "Purge"}, "'mode' is 'Purge'"),
])
def test_decode_bad_delete(change, match):
    with pytest.raises(WireFormatError, match=match):
        decode(b"c-42", orjson.dumps({**DEL, **change}), HEADERS)


def test_decode_random_bytes_never_crash_otherwise():
    import random
    rnd = random.Random(7)
    for _ in range(500):
        blob = bytes(rnd.randrange(256) for _ in range(rnd.randrange(60)))
        try:
            decode(b"k", blob, HEADERS)
        except WireFormatError:
            pass


def test_check_against_group_passes_and_fills_new_features():
    msg = decode(*encode(put_msg()))
    assert check_against_group(G, msg) == msg
    newer = G.with_added_features([F("city", "String")])
    checked = check_against_group(newer, msg)
    assert checked.record["city"] is None and checked.schema_version == msg.schema_version
    d = decode(*encode(validate_delete(G, "c-42", "2021-10-02T13:00:00Z")))
    assert check_against_group(G, d) is d


@pytest.mark.parametrize("record_change,match", [
    ({"age": "old"}, "feature 'age'"),
    ({"age": 2.5}, "feature 'age'"),
    ({"unknown": 1}, "has no feature 'unknown'"),
    ({"embedding": [1.0]}, "dimension 3"),
    ({"event_time": "2021-10-02T12:00:00"}, "add Z"),
    ({"customer_id": "c-43"}, "message id 'c-42' disagrees"),
    ({"event_time": "2021-10-02T12:00:01Z"}, "event_time_ns"),
])
def test_check_against_group_rejects(record_change, match):
    msg = decode(*encode(put_msg()))
    broken = PutMessage(msg.id, msg.event_time_ns, {**msg.record, **record_change})
    with pytest.raises(RecordValidationError, match=match):
        check_against_group(G, broken)


def test_check_against_group_rejects_bad_delete():
    with pytest.raises(RecordValidationError, match="event_time_ns"):
        check_against_group(G, DeleteMessage("c-42", 5, "2021-10-02T13:00:00Z"))
    ints = FeatureGroup("o", "oid", "ts", (F("oid", "Integral"), F("ts", "Fractional")))
    with pytest.raises(RecordValidationError, match="oid"):
        check_against_group(ints, DeleteMessage("abc", 0, 0))
