"""The wire codec: PutMessage/DeleteMessage <-> Kafka (key, value, headers), per docs/wire-format.md.

``decode`` trusts nothing: any byte string may arrive on a topic, and a consumer must turn
garbage into a WireFormatError (dead letter) rather than crash or store nonsense.
Checks against a group's schema are separate (:func:`check_against_group`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson

from schemas.errors import RecordValidationError, WireFormatError
from schemas.group import FeatureGroup
from schemas.messages import BOTH_STORES, HARD_DELETE, OFFLINE, ONLINE, SOFT_DELETE, DeleteMessage, PutMessage
from schemas.names import MAX_MESSAGE_BYTES
from schemas.validate import compile_validator

FORMAT = "json/1"
H_FORMAT = "fs-format"
H_SCHEMA_VERSION = "fs-schema-version"
H_API_TIME = "fs-api-invocation-time"
_FORMAT_BYTES = FORMAT.encode()

_STORES_JSON: dict[frozenset[str], list[str]] = {
    BOTH_STORES: [ONLINE, OFFLINE],
    frozenset({ONLINE}): [ONLINE],
    frozenset({OFFLINE}): [OFFLINE],
}
_VALID_STORES = (ONLINE, OFFLINE)
_INT64_MAX = 2**63 - 1
# librdkafka counts a message's wire size as key + value + headers plus a record's framing
# (varints, attributes: under 64 bytes) and each header's own varints; counted generously here.
_FRAMING_BYTES = 64
_HEADER_FRAMING_BYTES = 10
_dumps = orjson.dumps


def _stores_list(stores: frozenset[str]) -> list[str]:
    out = _STORES_JSON.get(stores)
    return out if out is not None else [s for s in _VALID_STORES if s in stores]


def encode_value(msg: PutMessage | DeleteMessage) -> bytes:
    """The JSON value of a message (the record must already be validated: no NaN, int64 only)."""
    if msg.op == "put":
        return _dumps({"op": "put", "id": msg.id, "event_time_ns": msg.event_time_ns, "record": msg.record,
                       "target_stores": _stores_list(msg.target_stores), "ttl_seconds": msg.ttl_seconds})
    return _dumps({"op": "delete", "id": msg.id, "event_time_ns": msg.event_time_ns,
                   "event_time": msg.event_time, "mode": msg.mode,
                   "target_stores": _stores_list(msg.target_stores)})


def put_value_frame(target_stores: frozenset[str], ttl_seconds: int | None) -> tuple[bytes, bytes, bytes, bytes]:
    """The constant texts of a put's value, for encoders that write many values at once
    (``schemas.column_encoder``): ``head + id + between + event_time_ns + record_open + members + tail``
    is byte for byte :func:`encode_value` of the same put, where ``members`` are ``"name":value``
    joined by commas in the group's feature order (a differential test holds the two together)."""
    tail = (b'},"target_stores":' + _dumps(_stores_list(target_stores)) + b',"ttl_seconds":'
            + _dumps(ttl_seconds) + b"}")
    return b'{"op":"put","id":', b',"event_time_ns":', b',"record":{', tail


def encode_headers(msg: PutMessage | DeleteMessage) -> list[tuple[str, bytes]]:
    return [(H_FORMAT, _FORMAT_BYTES),
            (H_SCHEMA_VERSION, str(msg.schema_version).encode()),
            (H_API_TIME, str(msg.api_invocation_time_ns).encode())]


def encode(msg: PutMessage | DeleteMessage, group: str | None = None) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    """(key, value, headers) to produce. Key = record identifier text, so one id -> one partition.

    Raises RecordValidationError when the message would pass Kafka's message size limit."""
    key, value, headers = msg.id.encode("utf-8"), encode_value(msg), encode_headers(msg)
    check_message_size(key, value, headers, record_id=msg.id, group=group)
    return key, value, headers


def message_size(key: bytes, value: bytes, headers: list[tuple[str, bytes]] | None) -> int:
    """The size Kafka's producer counts for a message, rounded up (see _FRAMING_BYTES)."""
    size = _FRAMING_BYTES + len(key) + len(value)
    for name, data in headers or ():
        size += _HEADER_FRAMING_BYTES + len(name) + len(data)
    return size


def check_message_size(key: bytes, value: bytes, headers: list[tuple[str, bytes]] | None, *,
                       record_id: str, group: str | None = None) -> None:
    """RecordValidationError naming the limit when a message is larger than MAX_MESSAGE_BYTES."""
    size = message_size(key, value, headers)
    if size > MAX_MESSAGE_BYTES:
        where = f"feature group {group!r}, " if group else ""
        raise RecordValidationError(
            f"{where}record {record_id!r:.80}: its Kafka message would be {size:,} bytes, over the "
            f"{MAX_MESSAGE_BYTES:,}-byte message size limit (the record's values fit their own limits, but "
            "its JSON encoding does not fit one Kafka message: shorten its longest values or lists)",
            group=group, value=size)


# ---------------------------------------------------------------- decoding

def _bad(reason: str) -> WireFormatError:
    return WireFormatError(f"not a featurestream {FORMAT} message: {reason}")


def _header_map(headers: Any) -> dict[str, bytes | None]:
    if headers is None:
        return {}
    items: Iterable[Any]
    if isinstance(headers, dict):
        items = headers.items()
    elif isinstance(headers, (list, tuple)):
        items = headers
    else:
        raise _bad(f"headers must be a list of (name, bytes) pairs; got {type(headers).__name__}")
    out: dict[str, bytes | None] = {}
    for item in items:
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise _bad(f"header {item!r:.80} is not a (name, value) pair")
        name, value = item
        if isinstance(name, bytes):
            name = name.decode("utf-8", "replace")
        if isinstance(value, str):
            value = value.encode("utf-8")
        elif value is not None and not isinstance(value, (bytes, bytearray, memoryview)):
            raise _bad(f"header {name!r} has a {type(value).__name__} value, not bytes")
        out[str(name)] = None if value is None else bytes(value)
    return out


def _header_int(h: dict[str, bytes | None], name: str, default: int, low: int) -> int:
    raw = h.get(name)
    if raw is None:
        return default
    try:
        text = raw.decode("ascii")
        if not text.lstrip("-").isdigit():
            raise ValueError
        value = int(text)
    except (UnicodeDecodeError, ValueError):
        raise _bad(f"header {name} is {raw[:40]!r}, not a decimal integer") from None
    if not low <= value <= _INT64_MAX:
        raise _bad(f"header {name} is {value}, out of range")
    return value


def _stores(obj: dict[str, Any]) -> frozenset[str]:
    raw = obj.get("target_stores")
    if raw is None:
        return BOTH_STORES
    if not isinstance(raw, list) or not raw or not all(s in _VALID_STORES for s in raw):
        raise _bad(f"target_stores {raw!r:.80} must be a non-empty list of {ONLINE!r}/{OFFLINE!r}")
    stores = frozenset(raw)
    return BOTH_STORES if stores == BOTH_STORES else stores


def decode(key: bytes | None, value: bytes | None, headers: Any) -> PutMessage | DeleteMessage:
    """Parse one group-topic message; WireFormatError with the precise reason if it is not one."""
    h = _header_map(headers)
    fmt = h.get(H_FORMAT)
    # A missing fs-format header is tolerated (hand-written producers); a different one is not.
    if fmt is not None and fmt != _FORMAT_BYTES:
        raise _bad(f"header {H_FORMAT} is {fmt[:40]!r}; this reader understands only {FORMAT!r}")
    if value is None:
        raise _bad("the value is null (a tombstone); group topics never carry tombstones")
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise _bad(f"the value is not UTF-8 JSON ({exc}); starts with {bytes(value[:40])!r}") from None
    except TypeError:
        raise _bad(f"the value is {type(value).__name__}, not bytes") from None
    if not isinstance(obj, dict):
        raise _bad(f"the value is a JSON {type(obj).__name__}, not an object")
    op = obj.get("op")
    rid = obj.get("id")
    if not isinstance(rid, str) or not rid:
        raise _bad(f"field 'id' is {rid!r:.80}, not a non-empty string")
    if key is not None and bytes(key) != rid.encode("utf-8", "surrogatepass"):
        raise _bad(f"key {bytes(key)[:80]!r} differs from id {rid!r:.80}; the key must be the record id")
    ns = obj.get("event_time_ns")
    if type(ns) is not int or ns < 0:
        raise _bad(f"field 'event_time_ns' is {ns!r:.80}, not a non-negative integer")
    version = _header_int(h, H_SCHEMA_VERSION, 1, 1)
    api_ns = _header_int(h, H_API_TIME, 0, 0)
    stores = _stores(obj)
    if op == "put":
        record = obj.get("record")
        if not isinstance(record, dict):
            raise _bad(f"field 'record' is {type(record).__name__}, not an object")
        ttl = obj.get("ttl_seconds")
        if ttl is not None and (type(ttl) is not int or ttl <= 0):
            raise _bad(f"field 'ttl_seconds' is {ttl!r:.80}, not null or a positive integer")
        return PutMessage(rid, ns, record, stores, ttl, version, api_ns)
    if op == "delete":
        if "event_time" not in obj or isinstance(obj["event_time"], (dict, list, bool)) or obj["event_time"] is None:
            raise _bad(f"field 'event_time' is {obj.get('event_time')!r:.80}, not a string or number")
        mode = obj.get("mode", SOFT_DELETE)
        if mode not in (SOFT_DELETE, HARD_DELETE):
            raise _bad(f"field 'mode' is {mode!r:.80}, not {SOFT_DELETE!r} or {HARD_DELETE!r}")
        return DeleteMessage(rid, ns, obj["event_time"], mode, stores, version, api_ns)
    raise _bad(f"field 'op' is {op!r:.80}, not 'put' or 'delete'")


def check_against_group(group: FeatureGroup, msg: PutMessage | DeleteMessage) -> PutMessage | DeleteMessage:
    """Check a decoded message against ``group``'s schema; RecordValidationError if it breaks it.

    Returns the message with its record coerced to the group's types (features of a newer
    group version that the message predates are null). Consumers dead-letter on error.
    """
    v = compile_validator(group)
    if msg.op == "delete":
        _, rid = v.record_id(msg.id)
        ns = v.event_time(msg.event_time)[1]
        _same(group, "id", msg.id, rid)
        _same(group, "event_time_ns", msg.event_time_ns, ns)
        return msg
    checked = v.validate(msg.record, target_stores=msg.target_stores, ttl_seconds=msg.ttl_seconds)
    _same(group, "id", msg.id, checked.id)
    _same(group, "event_time_ns", msg.event_time_ns, checked.event_time_ns)
    return PutMessage(msg.id, msg.event_time_ns, checked.record, msg.target_stores, msg.ttl_seconds,
                      msg.schema_version, msg.api_invocation_time_ns)


def _same(group: FeatureGroup, field: str, got: Any, expected: Any) -> None:
    if got != expected:
        raise RecordValidationError(
            f"feature group {group.name!r}: message {field} {got!r:.80} disagrees with its record "
            f"({expected!r:.80})", group=group.name, value=got)
