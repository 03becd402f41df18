"""Aggregation groups offline (issue 21, part 5): the point-in-time value from the source group's
offline table, on DuckDB and on Spark, equals the online value read live at that time and a
brute-force oracle computed here from the topic, independently of the product's code.

The processor and the offline sink run as processes over the real stack. Events over many keys
are shuffled within the allowed lateness, some beyond it (dead-lettered live, so excluded
offline), some published twice, some with a null amount; a source delete counts nothing back.
Online reads are taken live, at read times at or after every event published so far (a read "at
T" after later events were folded would see pruned tiles and later lifetime events).
"""

from __future__ import annotations

import math
import random
import time
from fractions import Fraction

import pandas as pd
import pytest

from schemas.eventtime import format_iso
from schemas.group import FeatureGroup
from schemas.types import FeatureDefinition as F
from sinks.offline.table_commit import recorded_offsets
from tests.integration.helpers import read_topic
from tests.integration.procs import Proc
from tests.integration.test_aggregations import LATENESS as PARITY_LATENESS
from tests.integration.test_aggregations import fold_topic as topic_events
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration

S = 1_000_000_000
MIN, HOUR, DAY = 60 * S, 3600 * S, 86400 * S
B = 1_704_844_800 * S  # 2024-01-10T00:00:00Z
LATENESS = 30 * MIN
assert LATENESS == PARITY_LATENESS  # the shared oracle (topic_events) folds with the parity test's lateness
WINDOWS = {"10m": 10 * MIN, "2h": 2 * HOUR, "3d": 3 * DAY, "lifetime": None}
FEATURES = ["amount:sum,count,mean,min,max,stddev@10m,2h,3d", "qty:sum,mean,min,max,stddev@2h,lifetime",
            "merchant:distinct,count@3d", "amount:last_n(5)", "merchant:last_n(3)"]
CARDS = 30


def source_group(name: str) -> FeatureGroup:
    return FeatureGroup(name, "txn_id", "event_time",
                        (F("txn_id", "String"), F("event_time", "String"), F("card_id", "String"),
                         F("amount", "Fractional"), F("qty", "Integral"), F("merchant", "String")),
                        online_enabled=False, partitions=3)


def make_events(rng: random.Random, day: int, serial: list[int]) -> list[dict]:
    """A day of events in nominal order, event times shuffled back by up to 20 min (within the
    lateness) or, for 4%, by 1-3 h (beyond it); 5% null amounts; 3% published twice."""
    start = B + (day - 1) * DAY
    out = []
    for _ in range(CARDS * 25):
        nominal = rng.randrange(start + 3 * HOUR, start + DAY)
        back = rng.randrange(HOUR, 3 * HOUR) if rng.random() < 0.04 else rng.randrange(0, 20 * MIN)
        serial[0] += 1
        out.append((nominal, {
            "txn_id": f"t{serial[0]}", "event_time": format_iso(nominal - back),
            "card_id": f"card-{rng.randrange(CARDS)}",
            "amount": None if rng.random() < 0.05 else round(rng.uniform(-50, 500), rng.choice([0, 2, 7])),
            "qty": rng.randrange(-10**15, 10**15), "merchant": f"m{rng.randrange(80)}"}))
    out.sort(key=lambda e: e[0])
    records = [r for _n, r in out]
    return records + [r for r in records if rng.random() < 0.03]


# ---------------------------------------------------------------- the oracle (no product code)

# topic_events: the parity test's brute-force fold of the topic (same 30-minute lateness).


def _ceil(t: int, size: int) -> int:
    return -(-t // size) * size


def bounds(t: int, w: int | None) -> tuple[int, int]:
    """The online read's window at t: its newest edge at the next whole minute, its oldest at the
    window's hop (minute up to 1 h, hour up to 2 days, day beyond); at a whole hop, (t - w, t]."""
    end = _ceil(t, MIN)
    if w is None:
        return -(2**63), end
    hop = MIN if w <= HOUR else HOUR if w <= 2 * DAY else DAY
    return _ceil(t, hop) - w, end


def oracle(events: list[tuple], t: int) -> dict:
    out: dict = {}
    for label, w in WINDOWS.items():
        lo, hi = bounds(t, w)
        inside = [r for et, _p, _o, r in events if lo < et <= hi]
        if label in ("10m", "2h", "3d"):
            amounts = [Fraction(r["amount"]) for r in inside if r["amount"] is not None]
            n = len(amounts)
            out[f"amount_count_{label}"] = n
            out[f"amount_sum_{label}"] = float(sum(amounts)) if n else 0.0
            if n:
                mean = sum(amounts) / n
                out[f"amount_mean_{label}"] = float(mean)
                out[f"amount_min_{label}"] = float(min(amounts))
                out[f"amount_max_{label}"] = float(max(amounts))
                out[f"amount_stddev_{label}"] = math.sqrt(sum((a - mean) ** 2 for a in amounts) / n)
        if label in ("2h", "lifetime"):
            qty = [r["qty"] for r in inside]
            out[f"qty_sum_{label}"] = sum(qty)
            if qty:
                n, s = len(qty), sum(qty)
                out[f"qty_mean_{label}"] = float(Fraction(s, n))
                out[f"qty_min_{label}"], out[f"qty_max_{label}"] = min(qty), max(qty)
                out[f"qty_stddev_{label}"] = math.sqrt(Fraction(n * sum(q * q for q in qty) - s * s, n * n))
        if label == "3d":
            out["merchant_count_3d"] = len(inside)
            out["merchant_distinct_3d"] = len({r["merchant"] for r in inside})  # exact; sketches within 3%
        if label == "lifetime":
            ordered = sorted((e for e in events if e[0] <= hi), key=lambda e: e[:3])
            last = [r["amount"] for _et, _p, _o, r in ordered if r["amount"] is not None]
            if last:
                out["amount_last5_lifetime"] = last[-5:]
            if ordered:
                out["merchant_last3_lifetime"] = [r["merchant"] for _et, _p, _o, r in ordered][-3:]
    return out


# ---------------------------------------------------------------- comparisons

def _float_close(got, want, rel: float) -> bool:
    return isinstance(got, float) and math.isclose(got, want, rel_tol=rel, abs_tol=1e-9 if want == 0 else 0.0)


def against_online(offline: dict, online: dict) -> list[str]:
    """Exact but for Fractional sums and means (online: Neumaier tile sums, 1e-12 relative) and
    Fractional stddev (online: Welford/Chan, 1e-9); the distinct estimate is the same integer."""
    bad = []
    for k in set(offline) | set(online):
        g, w = offline.get(k), online.get(k)
        if k.startswith("amount_") and any(f in k for f in ("_sum_", "_mean_", "_stddev_")) and w is not None:
            ok = _float_close(g, w, 1e-9 if "_stddev_" in k else 1e-12)
        else:
            ok = g == w and type(g) is type(w)
        if not ok:
            bad.append(f"{k}: offline {g!r}, online {w!r}")
    return bad


def against_oracle(offline: dict, want: dict) -> list[str]:
    """Offline Fractional sums are the exact sum correctly rounded, so equal to the oracle's; means
    are that sum / n (within an ulp or two), Integral stddev the root of the exact variance (within
    an ulp); the rest exact; distinct within 3% of the exact count."""
    bad = []
    for k in set(offline) | set(want):
        g, w = offline.get(k), want.get(k)
        if "_distinct_" in k:
            ok = g is not None and abs(g - w) <= max(1, 0.03 * w)
        elif (k.startswith("amount_mean_") or k.startswith("qty_stddev_")) and w is not None:
            ok = _float_close(g, w, 1e-15)  # the oracle's sqrt rounds twice (to float, then the root)
        else:
            ok = g == w and type(g) is type(w)
        if not ok:
            bad.append(f"{k}: offline {g!r}, oracle {w!r}")
    return bad


def _bits(v):
    if isinstance(v, float):
        return v.hex()
    if isinstance(v, list):
        return [_bits(x) for x in v]
    return v


def rows_of(table, names: list[str]) -> list[dict]:
    """Each result row as {aggregate: value}, absent values left out (as an online read leaves them)."""
    return [{n: r[n] for n in names if r[n] is not None} for r in table.to_pylist()]


def test_offline_and_spark_equal_online_and_the_oracle(store, stack, spark, tmp_path, unique_name):
    src = store.create_feature_group(source_group(unique_name("tx")))
    agg = store.create_aggregation_group(unique_name("card-stats"), src.name, "card_id", FEATURES,
                                         allowed_lateness="30m")
    names = [a.output_name for a in agg.aggregation.aggregates]
    topic = store.registry.topic_of(src.name)
    rng, serial = random.Random(2105), [0]
    procs = [Proc(stack, ["process", "--metrics-port", "0", "--log-level", "warning"], tmp_path / "p.log"),
             Proc(stack, ["sink", "--metrics-port", "0", "--max-age-s", "1"], tmp_path / "sink.log")]
    # At or after every event published before them: T at a whole day, and off the hops
    # (a tile-aligned window, and an hour-hop window that is empty).
    read_times = {1: [B + DAY, B + DAY + 7 * MIN + 31 * S + 123_456_789, B + DAY + 2 * HOUR - 1]}
    online: dict[tuple[str, int], dict | None] = {}
    try:
        for day in read_times:
            for record in make_events(rng, day, serial):
                store.put_record_async(src.name, record)
            store.delete_record(src.name, f"t{serial[0] - 5}", format_iso(B + DAY))  # un-counts nothing
            store.publisher.flush()
            events, late = topic_events(read_topic(stack, topic))
            t0 = read_times[day][0]

            def converged(events: dict = events, t0: int = t0) -> bool:
                for card, evs in events.items():
                    got, want = store.online.get_record(agg, card, now_ns=t0), oracle(evs, t0)
                    if got is None or any(got.get(k) != want[k] for k in ("amount_count_3d", "merchant_count_3d",
                                                                          "qty_sum_lifetime")):
                        return False
                return True

            wait_for(converged, timeout_s=120, interval_s=0.5, what=f"the processor to fold day {day}")
            for t in read_times[day]:  # the live reads at T
                for card in [*events, "card-none"]:
                    online[(card, t)] = store.online.get_record(agg, card, now_ns=t)
        assert late > 0, "no event was beyond the lateness: the test would not test the rule"

        messages = len(read_topic(stack, topic))
        wait_for(lambda: (t := store.offline_tables().existing(src)) is not None
                 and sum(recorded_offsets(t).values()) == messages, timeout_s=90, interval_s=0.5,
                 what=f"the sink to commit all {messages} offsets\n{procs[1].tail()}")
    finally:
        for p in procs:
            p.stop()

    cards = sorted(events)
    times = [t for ts in read_times.values() for t in ts] + [B - DAY]  # and before any event
    entity = pd.DataFrame([(c, t) for t in times for c in [*cards, "card-none"]], columns=["card_id", "ns"])
    entity["event_time"] = pd.to_datetime(entity.pop("ns"), unit="ns", utc=True)
    started = time.perf_counter()
    duck = store.get_historical_features(entity, [f"{agg.name}:*"])
    duck_s = time.perf_counter() - started
    assert duck.column_names == ["card_id", "event_time", *names]
    got = rows_of(duck, names)

    problems, compared = [], 0
    for i, (card, ts) in enumerate(zip(entity["card_id"], entity["event_time"], strict=True)):
        t = ts.value
        want = oracle(events.get(card, []), t)
        problems += [f"{card} @ {format_iso(t)} vs oracle: {d}" for d in against_oracle(got[i], want)]
        if (card, t) in online:
            live = online[(card, t)]
            if live is None:  # no state online: the empty answer
                assert card == "card-none" and got[i] == {**{n: 0 for n in names if "_count_" in n or "_distinct_" in n},
                                                          **{n: 0.0 for n in names if n.startswith("amount_sum_")},
                                                          **{n: 0 for n in names if n.startswith("qty_sum_")}}, got[i]
            else:
                compared += 1
                live = {k: v for k, v in live.items() if k not in ("card_id", "event_time")}
                problems += [f"{card} @ {format_iso(t)} vs online: {d}" for d in against_online(got[i], live)]
    assert not problems, "\n".join(problems[:20])
    assert compared == sum(v is not None for v in online.values()) == 3 * len(cards) > 0

    # Spark: the same computation, the same bits.
    started = time.perf_counter()
    sparked = store.get_historical_features(entity, [f"{agg.name}:*"], engine="spark", spark=spark)
    spark_s = time.perf_counter() - started
    assert sparked.column_names == duck.column_names
    differ = [(i, n) for n in names for i, (a, b) in enumerate(zip(duck.column(n).to_pylist(),
                                                                    sparked.column(n).to_pylist(), strict=True))
              if _bits(a) != _bits(b)]
    assert not differ, [(n, duck.column(n)[i], sparked.column(n)[i]) for i, n in differ[:5]]

    # snapshot: the aggregates of every key with an event, as a read at that time.
    t = read_times[1][1]
    snap = store.snapshot(agg.name, as_of=format_iso(t))
    assert snap.column("card_id").to_pylist() == cards
    assert set(snap.column("event_time").to_pylist()) == {format_iso(t)}
    at_t = [i for i, ts in enumerate(entity["event_time"]) if ts.value == t and entity["card_id"][i] != "card-none"]
    assert [_bits(r) for r in rows_of(snap, names)] == [_bits(got[i]) for i in at_t]
    # query: SQL over the aggregation group sees its values now.
    now = store.query(f'SELECT card_id, qty_sum_lifetime, amount_count_3d FROM "{agg.name}" ORDER BY card_id')
    assert now.to_pylist() == [{"card_id": c, "qty_sum_lifetime": oracle(events[c], time.time_ns())["qty_sum_lifetime"],
                                "amount_count_3d": 0} for c in cards]
    print(f"{serial[0]} events, {late} too late; {len(entity)} entity rows: DuckDB {duck_s:.1f} s, "
          f"Spark {spark_s:.1f} s")
