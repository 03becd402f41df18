"""The auditor's cheap fold (streams/audit_fold.py: columnar decode, values decoded only when sampled)
against the per-record fold it replaces (decode, check against the group, ``fold_online``), on random
topics: puts, soft and hard deletes, equal event times, TTLs, target stores, garbage bytes, records
that break the group, keys that differ from the id, headers of every shape and unknown schema versions."""

from __future__ import annotations

import random

import orjson
import pytest

from schemas.group import FeatureGroup
from schemas.messages import HARD_DELETE, OFFLINE, ONLINE, PutMessage
from schemas.ordering import version_key
from schemas.parity import fold_online, same_values
from schemas.ttl import Ttl
from sinks.online.expiry import expires_at_ns
from streams.audit_fold import TopicFold, decode_checked, plain_headers
from streams.route import RawMessage
from tests.integration.helpers import customer, customers_group

IDS = [f"c{i}" for i in range(12)]
TIMES = ["2031-01-01T00:00:00Z", "2031-01-01T00:00:01Z", "2031-01-01T00:00:01.5Z", "2031-01-01T00:00:02Z"]
NS = {t: n for t, n in zip(TIMES, (1924992000000000000, 1924992001000000000, 1924992001500000000,
                                   1924992002000000000), strict=True)}


def reference_fold(group: FeatureGroup, raws: list[RawMessage]) -> dict:
    """The per-record fold the auditor used before (streams/audit.py, GroupFold.advance)."""
    ttl = group.ttl.seconds if group.ttl is not None else None
    states, last_seen, not_targeted, poison = {}, {}, {}, {}
    for raw in raws:
        p, o = raw.partition, raw.offset
        msg = decode_checked(group, raw)
        if msg is None:
            poison.setdefault(p, set()).add(o)
            continue
        last_seen[msg.id] = (p, o)
        if OFFLINE not in msg.target_stores:
            not_targeted.setdefault(p, set()).add(o)
        if ONLINE not in msg.target_stores:
            states.setdefault(msg.id, None)
            continue
        key = version_key(msg.event_time_ns, p, o)
        if isinstance(msg, PutMessage):
            exp = expires_at_ns(msg.event_time_ns, msg.ttl_seconds, ttl)
            states[msg.id] = fold_online(states.get(msg.id), key, "put", msg.record, exp)
        else:
            exp = expires_at_ns(msg.event_time_ns, None, ttl)
            states[msg.id] = fold_online(states.get(msg.id), key, "delete", None, exp, hard=msg.mode == HARD_DELETE)
    return {"states": states, "last_seen": last_seen, "not_targeted": not_targeted, "poison": poison}


def random_value(rng: random.Random) -> tuple[str, bytes]:
    rid = rng.choice(IDS)
    when = rng.choice(TIMES)
    stores = rng.choice([None, [ONLINE], [OFFLINE], [ONLINE, OFFLINE], [], ["Nowhere"]])
    kind = rng.random()
    if kind < 0.6:
        rec = customer(int(rid[1:]))
        rec["event_time"] = when
        rec["visits"] = rng.randrange(1000)
        if rng.random() < 0.1:
            rec["age"] = "old"  # breaks the group: poison
        if rng.random() < 0.1:
            rec["score"] = None
        obj = {"op": "put", "id": rid, "event_time_ns": NS[when], "record": rec,
               "ttl_seconds": rng.choice([None, None, 60, 0])}
    else:
        obj = {"op": "delete", "id": rid, "event_time_ns": NS[when], "event_time": when}
        mode = rng.choice([None, "SoftDelete", HARD_DELETE, "Sideways"])
        if mode is not None:
            obj["mode"] = mode
    if stores is not None:
        obj["target_stores"] = stores
    if rng.random() < 0.05:
        obj["event_time_ns"] += 1  # disagrees with the record's event time: poison
    value = orjson.dumps(obj)
    if rng.random() < 0.05:
        value = rng.choice([b"\xff\xfe garbage", b"", b"[]", value[: len(value) // 2], b'{"op":"put"}'])
    return rid, value


def random_headers(rng: random.Random, version: int) -> object:
    api = str(rng.choice([0, 1_796_232_558_612_950_034, 42, 2**63 - 1, 2**63])).encode()
    shape = rng.random()
    if shape < 0.6:
        return [("fs-format", b"json/1"), ("fs-schema-version", str(rng.choice([1, 1, version + 1, 0])).encode()),
                ("fs-api-invocation-time", api)]
    if shape < 0.7:
        return None
    if shape < 0.8:
        return [("fs-schema-version", b"1")]
    if shape < 0.9:
        return [("fs-format", b"avro/1"), ("fs-schema-version", b"1"), ("fs-api-invocation-time", api)]
    return [(b"fs-format", b"json/1"), ("fs-schema-version", b"x1"), ("fs-api-invocation-time", api)]


def random_topic(rng: random.Random, n: int, version: int) -> list[RawMessage]:
    offsets = [0, 0, 0]
    out = []
    for _ in range(n):
        rid, value = random_value(rng)
        p = rng.randrange(3) if rng.random() < 0.1 else int(rid[1:]) % 3
        key = rid.encode() if rng.random() < 0.95 else rng.choice([None, b"other"])
        out.append(RawMessage("t", p, offsets[p], key, value, random_headers(rng, version)))
        offsets[p] += 1
    return out


def fold_cheaply(group: FeatureGroup, raws: list[RawMessage], rng: random.Random) -> TopicFold:
    fold = TopicFold(group, "t")
    i = 0
    while i < len(raws):  # batches of random sizes: the fold must not depend on where they are cut
        k = rng.randint(1, 40)
        fold.fold(raws[i:i + k], group)
        i += k
    return fold


@pytest.mark.parametrize("seed", range(40))
def test_the_cheap_fold_gives_the_per_record_folds_latest_version_of_every_id(seed):
    rng = random.Random(seed)
    group = customers_group("fold", ttl=Ttl(1, "Hours") if seed % 2 else None)
    raws = random_topic(rng, rng.randint(1, 150), group.version)
    want = reference_fold(group, raws)
    fold = fold_cheaply(group, raws, rng)
    assert fold.records == len(raws)
    assert fold.last_seen == want["last_seen"]
    assert fold.not_targeted == want["not_targeted"]
    assert fold.poison == want["poison"]
    assert set(fold.states) == set(want["states"])
    for rid, expected in want["states"].items():
        got = fold.state(rid)
        if expected is None:
            assert got is None, rid
            continue
        assert got is not None, rid
        assert (got.key, got.expires_at_ns) == (expected.key, expected.expires_at_ns), rid
        assert same_values(got.record, expected.record), (rid, got.record, expected.record)
        assert fold.position(rid) == (expected.key.partition, expected.key.offset)


def test_the_topics_are_not_trivial():
    """The random topics hold every case the fold must agree on (else the test above proves little)."""
    group = customers_group("fold")
    seen = {"poison": 0, "put": 0, "tombstone": 0, "removed": 0, "fast": 0, "slow valid": 0}
    for seed in range(40):
        rng = random.Random(seed)
        raws = random_topic(rng, rng.randint(1, 150), group.version)
        want = reference_fold(group, raws)
        seen["poison"] += sum(len(v) for v in want["poison"].values())
        for s in want["states"].values():
            seen["removed" if s is None else "put" if s.record is not None else "tombstone"] += 1
        fold = fold_cheaply(group, raws, rng)
        for s in fold.states.values():
            if s is not None and s.put is not None:
                seen["fast" if isinstance(s.put, bytes) else "slow valid"] += 1
    assert min(seen.values()) > 0, seen


def test_plain_headers_are_only_those_decode_surely_accepts():
    assert plain_headers(None)
    assert plain_headers([("fs-format", b"json/1"), ("fs-schema-version", b"7"),
                          ("fs-api-invocation-time", b"1796232558612950034")])
    assert not plain_headers([("fs-format", b"json/1"), ("fs-schema-version", b"0"),
                              ("fs-api-invocation-time", b"1")])
    assert not plain_headers([("fs-format", b"json/1"), ("fs-schema-version", b"1"),
                              ("fs-api-invocation-time", str(2**63).encode())])
    assert not plain_headers([("fs-format", b"avro/1"), ("fs-schema-version", b"1"),
                              ("fs-api-invocation-time", b"1")])
