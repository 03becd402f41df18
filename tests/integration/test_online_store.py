"""The Redis online store against a real Redis: write-if-newer, TTL, deletes, reads, failures.

Redis comes from FEATURESTREAM_REDIS_URL when set (cheap: no Kafka/S3 needed), else from the
shared ``stack`` fixture. Every test uses its own group names under this session's prefix.
"""

from __future__ import annotations

import asyncio
import random
import socket
import statistics
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import redis

from featurestream.config import Config
from schemas.aggregation import AggregationSpec, parse_aggregates
from schemas.aggregation_group import aggregation_group
from schemas.errors import RecordValidationError, ServiceUnavailableError
from schemas.eventtime import format_iso
from schemas.group import FeatureGroup
from schemas.messages import OFFLINE, ONLINE, DeleteMessage, PutMessage
from schemas.names import aggregate_key, online_key
from schemas.ordering import version_key, wins
from schemas.ttl import Ttl
from schemas.types import FeatureDefinition as F
from sinks.online import CorruptRecordError, OnlineStore, WriteStatus, connect
from sinks.online.async_reads import AsyncOnlineReads
from sinks.online.connect import connect_async
from tests.support.redis_cluster import redis_cluster
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration

S = 1_000_000_000
BASE_ET = 1_633_176_000_123_456_789  # 19 digits: not exact as a Lua/float number


@pytest.fixture(scope="module")
def redis_url(request: pytest.FixtureRequest) -> str:
    url = Config.from_env().redis_url
    return url if url else request.getfixturevalue("stack").redis_url


@pytest.fixture
def store(redis_url: str, topic_prefix: str) -> Iterator[OnlineStore]:
    s = OnlineStore.from_url(redis_url, topic_prefix)
    yield s
    s.close()


@pytest.fixture
def make_group(store: OnlineStore, unique_name: Callable[..., str]) -> Iterator[Callable[..., FeatureGroup]]:
    made: list[FeatureGroup] = []

    def make(*, ttl: Ttl | None = None, online: bool = True, extra_features: int = 0) -> FeatureGroup:
        feats = [F("cid", "String"), F("et", "String"), F("age", "Integral"), F("score", "Fractional"),
                 F("tags", "String", "List"), F("emb", "Fractional", "Vector", 3)]
        feats += [F(f"f{i}", "Integral") for i in range(extra_features)]
        group = FeatureGroup(unique_name("online"), "cid", "et", tuple(feats), online_enabled=online,
                             offline_enabled=True, ttl=ttl)
        made.append(group)
        return group

    yield make
    for group in made:
        store.wipe_group(group)


def put(rid: str, et: int, age: int = 1, *, ttl: int | None = None,
        stores: frozenset[str] = frozenset({ONLINE, OFFLINE})) -> PutMessage:
    return PutMessage(rid, et, {"cid": rid, "et": format_iso(et), "age": age, "score": age / 2,
                                "tags": [f"t{age}"], "emb": [0.1, 0.2, float(age)]},
                      target_stores=stores, ttl_seconds=ttl)


def soft(rid: str, et: int) -> DeleteMessage:
    return DeleteMessage(rid, et, format_iso(et), "SoftDelete")


def hard(rid: str, et: int) -> DeleteMessage:
    return DeleteMessage(rid, et, format_iso(et), "HardDelete")



def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed when the block ends: nothing listens there


# ---------------------------------------------------------------- ordering

def test_out_of_order_arrival_keeps_the_newest(store, make_group):
    g = make_group()
    r = store.apply_batch(g, [(put("a", BASE_ET + 3 * S, 3), 0, 10), (put("a", BASE_ET + S, 1), 0, 11),
                              (put("a", BASE_ET + 2 * S, 2), 0, 12)])
    assert r.statuses == [WriteStatus.APPLIED, WriteStatus.STALE, WriteStatus.STALE]
    assert store.get_record(g, "a")["age"] == 3
    assert store.record_meta(g, "a")["seq"] == "0:10"


def test_19_digit_event_times_one_ns_apart_are_ordered_exactly(store, make_group):
    g = make_group()
    newer, older = put("a", BASE_ET + 1, 2), put("a", BASE_ET, 1)
    assert float(BASE_ET) == float(BASE_ET + 1)  # the trap the Lua script must avoid
    r = store.apply_batch(g, [(newer, 0, 1), (older, 0, 2)])
    assert r.statuses == [WriteStatus.APPLIED, WriteStatus.STALE]
    assert store.get_record(g, "a")["age"] == 2


def test_negative_event_times_before_1970_order_correctly(store, make_group):
    g = make_group()
    r = store.apply_batch(g, [(put("a", -3 * S, 3), 0, 1), (put("a", -5 * S, 5), 0, 2),
                              (put("a", -1 * S, 1), 0, 3), (put("a", -2 * S, 2), 0, 4)])
    assert r.statuses == [WriteStatus.APPLIED, WriteStatus.STALE, WriteStatus.APPLIED, WriteStatus.STALE]
    assert store.get_record(g, "a")["age"] == 1


def test_duplicates_and_equal_event_times(store, make_group):
    g = make_group()
    first = put("a", BASE_ET, 1)
    r = store.apply_batch(g, [(first, 0, 5), (first, 0, 5),            # redelivery: duplicate
                              (put("a", BASE_ET, 2), 0, 7),            # same et, later offset: wins
                              (put("a", BASE_ET, 9), 0, 6),            # same et, earlier offset: stale
                              (put("a", BASE_ET, 2), 0, 7)])           # same (et, offset): duplicate
    assert r.statuses == [WriteStatus.APPLIED, WriteStatus.DUPLICATE, WriteStatus.APPLIED,
                          WriteStatus.STALE, WriteStatus.DUPLICATE]
    assert store.get_record(g, "a")["age"] == 2
    # Across partitions (after a repartition) the higher partition wins a tie: deterministic.
    r = store.apply_batch(g, [(put("a", BASE_ET, 4), 1, 0)])
    assert r.statuses == [WriteStatus.APPLIED] and store.get_record(g, "a")["age"] == 4


def _state(store: OnlineStore, g: FeatureGroup, ids: list[str]) -> dict[str, object]:
    c = store.client
    return {rid: (c.hgetall(online_key(store.prefix, g.name, rid)),
                  c.pttl(online_key(store.prefix, g.name, rid)) > 0) for rid in ids}


def test_replaying_a_batch_gives_identical_state(store, make_group):
    g = make_group(ttl=Ttl(1, "Days"))
    now = time.time_ns()
    rng = random.Random(7)
    batch = []
    for offset in range(200):
        rid = f"r{rng.randrange(20)}"
        et = now - rng.randrange(3600) * S
        msg = soft(rid, et) if rng.random() < 0.15 else put(rid, et, rng.randrange(100))
        batch.append((msg, 0, offset))
    store.apply_batch(g, batch)
    before = _state(store, g, [f"r{i}" for i in range(20)])
    again = store.apply_batch(g, batch)
    assert _state(store, g, [f"r{i}" for i in range(20)]) == before
    assert set(again.statuses) <= {WriteStatus.DUPLICATE, WriteStatus.STALE}


def test_concurrent_writers_end_at_the_brute_force_latest(redis_url, topic_prefix, store, make_group):
    g = make_group()
    rng = random.Random(42)
    messages = []
    for offset in range(600):
        rid = f"k{rng.randrange(40)}"
        partition = rng.randrange(3)
        et = BASE_ET + rng.randrange(50) * S  # few distinct times: many ties to break
        msg = soft(rid, et) if rng.random() < 0.1 else put(rid, et, offset)
        messages.append((msg, partition, offset))
    # Reference: per key, the message whose version key wins (schemas/ordering.py).
    latest: dict[str, tuple] = {}
    for msg, p, o in messages:
        key = version_key(msg.event_time_ns, p, o)
        if wins(key, version_key(*latest[msg.id][1:]) if msg.id in latest else None):
            latest[msg.id] = (msg, msg.event_time_ns, p, o)

    errors: list[BaseException] = []

    def writer(seed: int) -> None:
        try:
            own = OnlineStore.from_url(redis_url, topic_prefix)
            order = messages[:]
            random.Random(seed).shuffle(order)
            for i in range(0, len(order), 25):
                own.apply_batch(g, order[i:i + 25])
            own.close()
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(seed,)) for seed in (1, 2, 3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors and not any(t.is_alive() for t in threads)
    for rid, (msg, et, p, o) in latest.items():
        meta = store.record_meta(g, rid)
        assert (meta["event_time_ns"], meta["seq"]) == (et, f"{p}:{o}"), rid
        got = store.get_record(g, rid)
        if isinstance(msg, DeleteMessage):
            assert got is None and meta["deleted"] == "1"
        else:
            assert got == {k: v for k, v in msg.record.items() if v is not None}


# ---------------------------------------------------------------- TTL

def test_record_ttl_overrides_group_ttl_and_sets_pexpire(store, make_group):
    g = make_group(ttl=Ttl(1, "Hours"))
    now = time.time_ns()
    store.apply_batch(g, [(put("grp", now), 0, 1), (put("rec", now, ttl=30), 0, 2)])
    grp, rec = store.record_meta(g, "grp"), store.record_meta(g, "rec")
    assert grp["expires_at_ns"] == now + 3600 * S and 3_500_000 < grp["pttl_ms"] <= 3_600_001
    assert rec["expires_at_ns"] == now + 30 * S and 0 < rec["pttl_ms"] <= 30_001
    got = store.get_record(g, "rec", with_expires_at=True)
    assert got["ExpiresAt"] == format_iso(now + 30 * S) and got["Record"]["cid"] == "rec"


def test_expired_record_is_not_served_even_before_eviction(store, make_group):
    g = make_group(ttl=Ttl(1, "Hours"))
    now = time.time_ns()
    store.apply_batch(g, [(put("a", now), 0, 1)])
    later = now + 3600 * S
    assert store.get_record(g, "a", now_ns=later - 1) is not None
    assert store.get_record(g, "a", now_ns=later) is None
    assert store.batch_get([(g, ["a"], None)], now_ns=later).records == []
    assert store.record_meta(g, "a")["pttl_ms"] > 0  # still in Redis: the read decided


def test_redis_evicts_an_expired_key(store, make_group):
    g = make_group()
    store.apply_batch(g, [(put("a", time.time_ns(), ttl=1), 0, 1)])
    assert store.get_record(g, "a") is not None
    key = online_key(store.prefix, g.name, "a")
    wait_for(lambda: store.client.exists(key) == 0, timeout_s=5.0, what="Redis to evict the expired key")
    assert store.get_record(g, "a") is None


def test_put_already_expired_is_counted_and_does_not_resurrect_older(store, make_group):
    g = make_group()
    now = time.time_ns()
    r = store.apply_batch(g, [(put("fresh", now - 7200 * S, ttl=60), 0, 1)])
    assert r.statuses == [WriteStatus.EXPIRED] and store.record_meta(g, "fresh") is None
    # An older, long-lived record, then a newer put that is already expired: nothing is served.
    store.apply_batch(g, [(put("a", now - 7200 * S, 1, ttl=10 * 86400), 0, 1)])
    r = store.apply_batch(g, [(put("a", now - 3600 * S, 2, ttl=60), 0, 2)])
    assert r.statuses == [WriteStatus.EXPIRED]
    assert store.get_record(g, "a") is None
    meta = store.record_meta(g, "a")
    assert meta["deleted"] == "expired" and meta["pttl_ms"] > 86400 * 1000
    # The older record arriving again (replay) stays hidden.
    r = store.apply_batch(g, [(put("a", now - 7200 * S, 1, ttl=10 * 86400), 0, 1)])
    assert r.statuses == [WriteStatus.STALE] and store.get_record(g, "a") is None


# ---------------------------------------------------------------- deletes

def test_soft_delete_hides_and_keeps_older_puts_out(store, make_group):
    g = make_group(ttl=Ttl(2, "Hours"))
    now = time.time_ns()
    store.apply_batch(g, [(put("a", now - 10 * S), 0, 1)])
    r = store.apply_batch(g, [(soft("a", now - 5 * S), 0, 2)])
    assert r.statuses == [WriteStatus.DELETED] and store.get_record(g, "a") is None
    meta = store.record_meta(g, "a")
    assert meta["deleted"] == "1" and 0 < meta["pttl_ms"] <= 7200 * 1000  # tombstone has the group TTL
    assert store.apply_batch(g, [(put("a", now - 8 * S), 0, 3)]).statuses == [WriteStatus.STALE]
    assert store.get_record(g, "a") is None
    # An older soft delete leaves the record alone; a newer put brings it back.
    assert store.apply_batch(g, [(put("a", now), 0, 4)]).statuses == [WriteStatus.APPLIED]
    assert store.apply_batch(g, [(soft("a", now - S), 0, 5)]).statuses == [WriteStatus.STALE]
    assert store.get_record(g, "a")["cid"] == "a"


def test_hard_delete_removes_and_an_older_put_is_accepted_again(store, make_group):
    g = make_group()
    store.apply_batch(g, [(put("a", BASE_ET, 1), 0, 1)])
    assert store.apply_batch(g, [(hard("a", BASE_ET + S), 0, 2)]).statuses == [WriteStatus.DELETED]
    assert store.record_meta(g, "a") is None and store.get_record(g, "a") is None
    assert store.apply_batch(g, [(put("a", BASE_ET - S, 7), 0, 0)]).statuses == [WriteStatus.APPLIED]
    assert store.get_record(g, "a")["age"] == 7


def test_a_hard_delete_older_than_the_record_is_historic_not_refused(store, make_group):
    # The door refuses one it can see is older (FeatureStore.check_hard_delete); one that gets here
    # anyway (a newer put was still in flight at the door) is historic like an older put: the
    # online record stays, the offline store keeps the delete, nothing is dead-lettered.
    g = make_group()
    store.apply_batch(g, [(put("a", BASE_ET, 1), 0, 1)])
    r = store.apply_batch(g, [(hard("a", BASE_ET - 1), 0, 2)])
    assert r.statuses == [WriteStatus.STALE] and r.rejected == []
    assert store.get_record(g, "a")["age"] == 1


# ---------------------------------------------------------------- skipping

def test_offline_only_and_online_disabled_are_skipped(store, make_group):
    g = make_group()
    r = store.apply_batch(g, [(put("a", BASE_ET, stores=frozenset({OFFLINE})), 0, 1),
                              (put("b", BASE_ET), 0, 2)])
    assert r.statuses == [WriteStatus.SKIPPED, WriteStatus.APPLIED]
    assert store.get_record(g, "a") is None
    off = make_group(online=False)
    r = store.apply_batch(off, [(put("a", BASE_ET), 0, 1)])
    assert r.count("skipped") == 1 and store.record_meta(off, "a") is None


# ---------------------------------------------------------------- reads

def test_feature_subset_and_unknown_features(store, make_group):
    g = make_group()
    store.apply_batch(g, [(put("a", BASE_ET, 4), 0, 1)])
    assert store.get_record(g, "a", ["age", "tags"]) == {"age": 4, "tags": ["t4"]}
    assert store.get_record(g, "missing", ["age"]) is None
    with pytest.raises(RecordValidationError, match=r"no feature 'nope', 'zip'; its features are cid"):
        store.get_record(g, "a", ["age", "nope", "zip"])


@pytest.mark.parametrize("bad", [None, "", 3.5, b"a", ["a"], "x" * 3000])
def test_bad_record_ids_are_refused(store, make_group, bad):
    g = make_group()
    with pytest.raises(RecordValidationError, match="record identifier"):
        store.get_record(g, bad)


def test_integral_ids_read_as_their_decimal_text(store, make_group):
    g = make_group()
    store.apply_batch(g, [(put("42", BASE_ET), 0, 1)])
    assert store.get_record(g, 42)["cid"] == "42"


def test_a_group_must_be_a_feature_group(store):
    with pytest.raises(RecordValidationError, match="expected a FeatureGroup"):
        store.get_record("customers", "a")
    with pytest.raises(RecordValidationError, match="expected a FeatureGroup"):
        store.apply_batch({"name": "customers"}, [])


def test_batch_get_found_missing_errors_and_limits(store, make_group):
    g1, g2, g3 = make_group(), make_group(), make_group()
    store.apply_batch(g1, [(put("a", BASE_ET, 1), 0, 1), (put("b", BASE_ET, 2), 0, 2)])
    store.apply_batch(g2, [(put("a", BASE_ET, 3), 0, 1)])
    result = store.batch_get([
        (g1, ["a", "b", "nope", "a", 3.5], ["age"]),
        (g2, ["a"], None),
        (g3, [f"id{i}" for i in range(101)], None),   # over the limit: errors for g3 only
        (g2, ["a"], ["bogus"]),                         # unknown feature: errors for that request
    ])
    assert result.record(g1.name, "a") == {"age": 1} and result.record(g1.name, "b") == {"age": 2}
    assert result.record(g2.name, "a")["age"] == 3
    assert (g1.name, "nope") in result.missing and result.unprocessed == []
    by_group: dict[str, list] = {}
    for e in result.errors:
        by_group.setdefault(e.group, []).append(e)
    assert len(by_group[g3.name]) == 101 and "at most 100" in by_group[g3.name][0].message
    assert [e.record_id for e in by_group[g1.name]] == ["3.5"]
    assert "bogus" in by_group[g2.name][0].message
    assert len(result.records) == 3  # the duplicate "a" is read once


def test_batch_get_refuses_malformed_requests(store, make_group):
    g = make_group()
    for bad in ["g", [(g, "a", None)], [(g, ["a"])], [("g", ["a"], None)], None]:
        with pytest.raises(RecordValidationError):
            store.batch_get(bad)


# ---------------------------------------------------------------- bad input and junk

def test_malformed_items_refuse_the_whole_batch_before_writing(store, make_group):
    g = make_group()
    good = (put("a", BASE_ET), 0, 1)
    for bad in [("not a tuple"), (put("b", BASE_ET), 0), ({"op": "put"}, 0, 1),
                (put("b", BASE_ET), -1, 0), (put("b", BASE_ET), 0, "7"), (put("b", BASE_ET), True, 1)]:
        with pytest.raises(RecordValidationError, match=g.name):
            store.apply_batch(g, [good, bad])
    assert store.record_meta(g, "a") is None


def test_bad_messages_are_rejected_one_by_one(store, make_group):
    g = make_group()
    nan = PutMessage("n", BASE_ET, {"cid": "n", "score": float("nan")})
    unknown = PutMessage("u", BASE_ET, {"cid": "u", "nope": 1})
    bad_time = PutMessage("t", "yesterday", {"cid": "t"})  # type: ignore[arg-type]
    huge_time = PutMessage("h", 2**70, {"cid": "h"})
    bad_ttl = PutMessage("l", BASE_ET, {"cid": "l"}, ttl_seconds=-5)
    bad_mode = DeleteMessage("m", BASE_ET, "x", mode="Obliterate")
    bad_id = PutMessage(None, BASE_ET, {"cid": "x"})  # type: ignore[arg-type]
    r = store.apply_batch(g, [(m, 0, i) for i, m in enumerate(
        [nan, unknown, bad_time, huge_time, bad_ttl, bad_mode, bad_id, put("ok", BASE_ET)])])
    assert r.statuses == [WriteStatus.REJECTED] * 7 + [WriteStatus.APPLIED]
    reasons = dict(r.rejected)
    assert "not a finite number" in reasons["n"] and "unknown feature 'nope'" in reasons["u"]
    assert "'yesterday'" in reasons["t"] and "64-bit" in reasons["h"] and "ttl_seconds -5" in reasons["l"]
    assert "'Obliterate'" in reasons["m"] and "record identifier None" in reasons["None"]
    assert store.get_record(g, "ok") is not None and store.record_meta(g, "n") is None


def test_garbage_in_a_hash_is_a_clear_error_not_a_crash(store, make_group):
    g = make_group()
    c = store.client
    c.hset(online_key(store.prefix, g.name, "junk"), mapping={"__et": "5", "age": "not json"})
    c.hset(online_key(store.prefix, g.name, "nometa"), mapping={"age": "1"})
    c.hset(online_key(store.prefix, g.name, "badmeta"), mapping={"__et": "soon", "__seq": "0:1"})
    c.set(online_key(store.prefix, g.name, "string"), "hello")
    with pytest.raises(CorruptRecordError, match=r"record 'junk', feature 'age': stored value b'not json'"):
        store.get_record(g, "junk")
    with pytest.raises(CorruptRecordError, match="no __et"):
        store.get_record(g, "nometa")
    with pytest.raises(CorruptRecordError, match="WRONGTYPE"):
        store.get_record(g, "string")
    result = store.batch_get([(g, ["junk", "string", "badmeta"], None)])
    assert {e.record_id: e.code for e in result.errors} == {
        "junk": "CorruptRecord", "string": "CorruptRecord", "badmeta": "CorruptRecord"}
    r = store.apply_batch(g, [(put("badmeta", BASE_ET), 0, 1), (put("string", BASE_ET), 0, 1),
                              (put("nometa", BASE_ET), 0, 1)])
    assert r.statuses == [WriteStatus.REJECTED, WriteStatus.REJECTED, WriteStatus.APPLIED]
    reasons = dict(r.rejected)
    assert "corrupt metadata" in reasons["badmeta"] and "WRONGTYPE" in reasons["string"]


def test_big_record_with_thousands_of_features(store, make_group):
    g = make_group(extra_features=2400)
    record = {"cid": "big", **{f"f{i}": i for i in range(2400)}}
    assert store.apply_batch(g, [(PutMessage("big", BASE_ET, record), 0, 1)]).statuses == [WriteStatus.APPLIED]
    assert store.get_record(g, "big") == record


def test_script_reloads_after_the_cache_is_flushed(store, make_group):
    g = make_group()
    store.client.script_flush()
    assert store.apply_batch(g, [(put("a", BASE_ET), 0, 1)]).statuses == [WriteStatus.APPLIED]


def test_wipe_group_removes_only_that_group(store, make_group):
    g1, g2 = make_group(), make_group()
    store.apply_batch(g1, [(put(f"r{i}", BASE_ET), 0, i) for i in range(1200)])
    store.apply_batch(g2, [(put("x", BASE_ET), 0, 1)])
    assert store.wipe_group(g1) == 1200
    assert store.get_record(g1, "r5") is None and store.get_record(g2, "x") is not None


# ---------------------------------------------------------------- Redis down

def test_redis_down_fails_fast_with_a_clear_error(topic_prefix, make_group):
    port = closed_port()
    start = time.monotonic()
    with pytest.raises(ServiceUnavailableError, match=f"127.0.0.1:{port}/0 did not answer"):
        OnlineStore.from_url(f"redis://:secret@127.0.0.1:{port}/0", topic_prefix)
    assert time.monotonic() - start < 5
    # A store whose server goes away later: every call fails fast and names the server.
    dead = OnlineStore(connect(f"redis://127.0.0.1:{port}/0", check=False), topic_prefix)
    g = make_group()
    for call in (lambda: dead.get_record(g, "a"), lambda: dead.batch_get([(g, ["a"], None)]),
                 lambda: dead.apply_batch(g, [(put("a", BASE_ET), 0, 1)]), lambda: dead.wipe_group(g)):
        start = time.monotonic()
        with pytest.raises(ServiceUnavailableError, match=f"127.0.0.1:{port}") as info:
            call()
        assert time.monotonic() - start < 5 and "secret" not in str(info.value)


def test_wrong_password_is_a_clear_error(redis_url):
    client = redis.Redis.from_url(redis_url)
    if client.config_get("requirepass").get("requirepass"):
        pytest.skip("this Redis already requires a password")
    bad = redis_url.replace("redis://", "redis://nobody:wrong@", 1)
    with pytest.raises(ServiceUnavailableError, match="refused the credentials") as info:
        connect(bad)
    assert "wrong" not in str(info.value)


# ---------------------------------------------------------------- measurements

def _percentiles(samples: list[float]) -> tuple[float, float]:
    q = statistics.quantiles(samples, n=100)
    return q[49] * 1e6, q[98] * 1e6


# ---------------------------------------------------------------- Redis Cluster

@pytest.fixture(scope="module")
def redis_cluster_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A throw-away 3-node Redis Cluster on loopback (real redis-server processes)."""
    with redis_cluster(tmp_path_factory.mktemp("redis-cluster")) as url:
        yield url


def test_redis_cluster_writes_reads_reload_and_wipe(redis_cluster_url, topic_prefix, make_group):
    g = make_group(ttl=Ttl(1, "Hours"))
    store = OnlineStore.from_url(redis_cluster_url, topic_prefix)
    try:
        now = time.time_ns()
        msgs = [(put(f"r{i}", now, i), 0, i) for i in range(300)]
        assert store.apply_batch(g, msgs).count("applied") == 300
        assert store.apply_batch(g, msgs).count("duplicate") == 300
        # Keys of one group land on every node: no group-wide hash tag.
        slots = {store.client.keyslot(online_key(store.prefix, g.name, f"r{i}")) for i in range(300)}
        assert len({store.client.nodes_manager.get_node_from_slot(s).name for s in slots}) == 3
        store.client.script_flush()  # every primary forgets the script: reload on NOSCRIPT
        r = store.apply_batch(g, [(put("r1", now + 1, 99), 0, 1000), (hard("r2", now + 1), 0, 1001)])
        assert r.statuses == [WriteStatus.APPLIED, WriteStatus.DELETED]
        assert store.get_record(g, "r1")["age"] == 99 and store.get_record(g, "r2") is None
        assert 0 < store.record_meta(g, "r3")["pttl_ms"] <= 3_600_001
        got = store.batch_get([(g, [f"r{i}" for i in range(100)], ["age"])])
        assert len(got.records) == 99 and got.missing == [(g.name, "r2")]
        assert store.wipe_group(g) == 299 and store.get_record(g, "r5") is None
    finally:
        store.close()


def test_redis_cluster_folds_aggregates_once_spread_over_every_node(redis_cluster_url, topic_prefix, make_group):
    """Issue 21: aggregation state is per key with no group-wide hash tag, so it spreads over a
    Redis Cluster; redelivery is still not counted twice, and a flushed script is reloaded."""
    source = make_group()
    agg = aggregation_group(f"{source.name}-stats", AggregationSpec(
        source.name, "cid", parse_aggregates(["age:sum,count,max@1h,lifetime", "age:last_n(3)"]),
        lateness_ns=3 * 3600 * 10**9), source)
    store = OnlineStore.from_url(redis_cluster_url, topic_prefix)
    rng = random.Random(21)
    minute, hour = 60 * 10**9, 3600 * 10**9
    now = time.time_ns() // minute * minute  # a whole minute: a 1 h window read then is exactly (T - 1h, T]
    # Event times within the last 2 h (inside the lateness), so some fall out of the 1 h window.
    events = [(f"k{rng.randrange(90)}", now - rng.randrange(1, 2 * hour), rng.randrange(-10**15, 10**15))
              for _ in range(600)]
    items = [(put(k, et, age), i % 3, i // 3) for i, (k, et, age) in enumerate(events)]
    try:
        assert store.aggregates.fold(agg, items).counts == {"folded": 600}
        assert store.aggregates.fold(agg, items).counts == {"duplicate": 600}  # redelivered: not again
        nodes = {store.client.nodes_manager.get_node_from_slot(
            store.client.keyslot(aggregate_key(store.prefix, agg.name, k))).name for k, _et, _a in events}
        assert len(nodes) == 3
        store.client.script_flush()  # every primary forgets the script: reload on NOSCRIPT
        extra = (put("k1", now - 10**9, 7), 0, 10**6)
        assert store.aggregates.fold(agg, [extra]).counts == {"folded": 1}
        items.append(extra)
        events.append(("k1", now - 10**9, 7))
        for key in sorted({k for k, _et, _a in events}):
            mine = [(et, p, o, a) for (k, et, a), (_m, p, o) in zip(events, items, strict=True) if k == key]
            recent = [a for et, _p, _o, a in mine if now - hour < et <= now]
            want = {"age_sum_1h": sum(recent), "age_count_1h": len(recent),
                    "age_sum_lifetime": sum(a for *_x, a in mine), "age_count_lifetime": len(mine),
                    "age_max_lifetime": max(a for *_x, a in mine),
                    "age_last3_lifetime": [a for *_x, a in sorted(mine)][-3:]}
            if recent:
                want["age_max_1h"] = max(recent)
            got = store.get_record(agg, key, now_ns=now)
            assert {k: got.get(k) for k in want} == want and not set(got) - {*want, "cid", "et"}, key
    finally:
        store.aggregates.wipe_group(agg)
        store.close()


# ---------------------------------------------------------------- the event-loop reader

def _read_async(url: str, prefix: str, calls: list[Callable]) -> list:
    """Each ``call(reader)`` awaited on one AsyncOnlineReads; what it returned or raised."""
    async def run() -> list:
        reader = AsyncOnlineReads.from_url(url, prefix)
        out = []
        try:
            for call in calls:
                try:
                    out.append(await call(reader))
                except Exception as exc:  # noqa: BLE001 - compared with the blocking store's
                    out.append(exc)
        finally:
            await reader.aclose()
        return out

    return asyncio.run(run())


def _read_sync(store: OnlineStore, calls: list[Callable]) -> list:
    out = []
    for call in calls:
        try:
            out.append(call(store))
        except Exception as exc:  # noqa: BLE001 - compared with the event-loop reader's
            out.append(exc)
    return out


def _same(a: object, b: object) -> bool:
    if isinstance(a, Exception) or isinstance(b, Exception):
        return type(a) is type(b) and str(a) == str(b)
    return a == b


@pytest.mark.parametrize("where", ["standalone", "cluster"])
def test_the_event_loop_reader_answers_exactly_as_the_blocking_store(where, request, redis_url, topic_prefix,
                                                                     make_group):
    """The HTTP API reads through ``AsyncOnlineReads``: same answers, expiry, errors and messages as
    ``OnlineStore`` (they share everything but the I/O), on one server and on a Redis Cluster."""
    url = redis_url if where == "standalone" else request.getfixturevalue("redis_cluster_url")
    g = make_group(ttl=Ttl(1, "Hours"))
    agg = aggregation_group(f"{g.name}-stats", AggregationSpec(
        g.name, "cid", parse_aggregates(["age:sum,count@1h,lifetime", "age:last_n(2)"]), lateness_ns=3600 * S), g)
    store = OnlineStore.from_url(url, topic_prefix)
    now = time.time_ns()
    try:
        store.apply_batch(g, [(put(f"r{i}", now - i * S, i), 0, i) for i in range(6)]
                          + [(put("short", now - 3 * S, 7, ttl=5), 0, 10), (soft("r4", now), 0, 11),
                             (hard("r5", now), 0, 12)])
        assert store.aggregates.fold(agg, [(put(f"k{i % 2}", now - i * S, i), 0, i) for i in range(5)]).counts == \
            {"folded": 5}
        store.client.set(online_key(store.prefix, g.name, "foreign"), "not a hash")
        ids = ["r0", "r1", "r3", "r4", "r5", "short", "nobody", ""]
        calls = [
            lambda s: s.get_record(g, "r1", now_ns=now),
            lambda s: s.get_record(g, "r2", ["age", "emb"], with_expires_at=True, now_ns=now),
            lambda s: s.get_record(g, "short", now_ns=now + 3 * S),  # expired, not yet evicted
            lambda s: s.get_record(g, "short", with_expires_at=True, now_ns=now),  # not expired yet
            lambda s: s.get_record(g, "r4", now_ns=now),  # soft-deleted
            lambda s: s.get_record(g, "foreign", now_ns=now),  # WRONGTYPE: CorruptRecordError
            lambda s: s.get_record(g, "r1", ["nope"], now_ns=now),  # RecordValidationError
            lambda s: s.get_record(agg, "k0", now_ns=now),
            lambda s: s.get_record(agg, "k1", ["age_sum_lifetime"], with_expires_at=True, now_ns=now),
            lambda s: s.batch_get([(g, ids, None), (g, ["r0", "foreign"], ["age"]), (agg, ["k0", "k9"], None)],
                                  now_ns=now),
        ]
        sync = _read_sync(store, calls)
        loop = _read_async(url, topic_prefix, calls)
        assert sync[0]["age"] == 1 and sync[2] is None and sync[3]["Record"]["age"] == 7 and sync[4] is None
        assert isinstance(sync[5], CorruptRecordError) and isinstance(sync[6], RecordValidationError)
        assert sync[7]["age_count_lifetime"] == 3 and sync[9].records and sync[9].errors
        for n, (a, b) in enumerate(zip(sync, loop, strict=True)):
            assert _same(a, b), (n, a, b)
        down = f"redis://127.0.0.1:{closed_port()}/0"
        started = time.monotonic()
        (failed,) = _read_async(down, topic_prefix, [lambda s: s.get_record(g, "r1")])
        assert isinstance(failed, ServiceUnavailableError) and f"127.0.0.1:{down.rsplit(':', 1)[1][:-2]}" in str(failed)
        assert time.monotonic() - started < 5
    finally:
        store.aggregates.wipe_group(agg)
        if where == "cluster":
            store.wipe_group(g)
        store.close()


def test_the_event_loop_reader_bounds_its_round_trips_and_fails_each_read_within_the_timeout():
    """A server that accepts connections and never answers (as a stopped Redis does): with one round trip
    allowed in flight, the first read fails on its socket timeout and the others on waiting for a slot,
    each within about the timeout (twice for the first: redis-py retries once), none hangs."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)  # connections complete in the kernel; nothing ever reads or answers
        url = f"redis://127.0.0.1:{silent.getsockname()[1]}/0"
        group = FeatureGroup("silent", "cid", "et", (F("cid", "String"), F("et", "String")))

        async def run() -> list[tuple[float, object]]:
            reader = AsyncOnlineReads(connect_async(url, timeout_s=0.3), "fs", where=url, timeout_s=0.3,
                                      max_in_flight=1)

            async def timed(n: int) -> tuple[float, object]:
                started = time.monotonic()
                try:
                    out: object = await reader.get_record(group, f"r{n}")
                except Exception as exc:  # noqa: BLE001 - asserted on below
                    out = exc
                return time.monotonic() - started, out

            try:
                return await asyncio.gather(*(timed(n) for n in range(4)))
            finally:
                await reader.aclose()

        answers = asyncio.run(run())
    for seconds, out in answers:
        assert isinstance(out, ServiceUnavailableError) and url in str(out), out
        assert seconds < 2.5, f"a read failed after {seconds:.1f} s with a 0.3 s timeout"
    assert sum("round trips allowed at once" in str(out) for _s, out in answers) == 3, answers
