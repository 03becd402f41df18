"""Point-in-time aggregates (sinks/offline/pit_aggregates.py) on in-memory DuckDB, against a brute
force written here: lateness by offset order, duplicates as two offsets, deletes and nulls, windows
at and off their step, empty windows; and Redis's HyperLogLog (schemas/hll.py) against PFCOUNT
answers recorded from a Redis 7.0 server."""

from __future__ import annotations

import math
import random
from fractions import Fraction

import duckdb
import numpy as np
import pyarrow as pa
import pytest

from schemas.aggregation import AggregationSpec, parse_aggregates
from schemas.aggregation_group import aggregation_group
from schemas.group import FeatureGroup
from schemas.hll import distinct_text, estimate, register_of
from schemas.types import FeatureDefinition as F
from sinks.offline.pit_aggregates import AggregateRequest, compute, statements

S = 1_000_000_000
MIN, HOUR, DAY = 60 * S, 3600 * S, 86400 * S
B = 1_704_844_800 * S
LATENESS = 30 * MIN


def _group():
    src = FeatureGroup("tx", "txn_id", "event_time",
                       (F("txn_id", "String"), F("event_time", "String"), F("card_id", "Integral"),
                        F("amount", "Fractional"), F("qty", "Integral"), F("merchant", "String")))
    spec = AggregationSpec("tx", "card_id", parse_aggregates(
        ["amount:sum,count,mean,min,max,stddev@10m,2h", "qty:sum,mean,min,max,stddev@3d,lifetime",
         "merchant:count@2h", "amount:last_n(3)"]), LATENESS)
    return aggregation_group("card-stats", spec, src)


class _Engine:
    dialect = "duckdb"

    def __init__(self, con):
        self.con, self.n, self.keep = con, 0, []

    def rows(self, sql):
        return self.con.sql(sql).to_arrow_table()

    def view(self, sql):
        return self.table(self.rows(sql))

    def table(self, data):
        self.n += 1
        self.keep.append(data)
        self.con.register(f"t{self.n}", data)
        return f"t{self.n}"


def _source_rows(rng: random.Random, n: int) -> list[dict]:
    rows = []
    for o in range(n):
        back = rng.randrange(HOUR, 3 * HOUR) if rng.random() < 0.1 else rng.randrange(0, 20 * MIN)
        rows.append({"card_id": None if rng.random() < 0.03 else rng.randrange(4), "et": B + o * 20 * S * 9 - back,
                     "_kafka_partition": rng.randrange(2), "_kafka_offset": o, "is_deleted": rng.random() < 0.05,
                     "amount": None if rng.random() < 0.1 else rng.choice([0.1, 0.2, 1e16, -1e16, 3.5, -2.25]),
                     "qty": rng.randrange(-2**55, 2**55), "merchant": rng.choice(["a", "b", None])})
    return rows


def _brute(rows: list[dict], key: int, t: int) -> dict:
    marks: dict[int, int] = {}
    kept = []
    for r in rows:  # offset order; a key's mark per partition
        if r["is_deleted"] or r["card_id"] != key:
            continue
        mark = marks.get(r["_kafka_partition"])
        if mark is not None and r["et"] + LATENESS < mark:
            continue
        marks[r["_kafka_partition"]] = r["et"] if mark is None else max(mark, r["et"])
        kept.append(r)
    end = -(-t // MIN) * MIN
    out: dict = {}

    def window(w, hop):
        lo = -(-t // hop) * hop - w if w else -(2**63)
        return [r for r in kept if lo < r["et"] <= end]

    for label, w, hop in (("10m", 10 * MIN, MIN), ("2h", 2 * HOUR, HOUR)):
        xs = [r["amount"] for r in window(w, hop) if r["amount"] is not None]
        out[f"amount_count_{label}"] = len(xs)
        out[f"amount_sum_{label}"] = float(sum(map(Fraction, xs))) if xs else 0.0
        if xs:
            mean = sum(map(Fraction, xs)) / len(xs)
            out[f"amount_mean_{label}"] = math.fsum(xs) / len(xs)
            out[f"amount_min_{label}"], out[f"amount_max_{label}"] = min(xs), max(xs)
            out[f"amount_stddev_{label}"] = math.sqrt(sum((Fraction(x) - mean) ** 2 for x in xs) / len(xs))
    out["merchant_count_2h"] = sum(r["merchant"] is not None for r in window(2 * HOUR, HOUR))
    for label, w in (("3d", 3 * DAY), ("lifetime", None)):
        qs = [r["qty"] for r in window(w, DAY)]
        out[f"qty_sum_{label}"] = sum(qs)
        if qs:
            n, s = len(qs), sum(qs)
            out[f"qty_mean_{label}"] = float(Fraction(s, n))
            out[f"qty_min_{label}"], out[f"qty_max_{label}"] = min(qs), max(qs)
            var = Fraction(n * sum(q * q for q in qs) - s * s, n * n)
            out[f"qty_stddev_{label}"] = float(math.isqrt(var.numerator * 4**60 // var.denominator)) / 2**60
    last = sorted((r for r in window(None, DAY) if r["amount"] is not None),
                  key=lambda r: (r["et"], r["_kafka_partition"], r["_kafka_offset"]))
    if last:
        out["amount_last3_lifetime"] = [r["amount"] for r in last[-3:]]
    return out


def test_pit_aggregates_equal_a_brute_force():
    rng = random.Random(7)
    rows = _source_rows(rng, 400)
    con = duckdb.connect()
    con.register("src", pa.Table.from_pylist(rows, pa.schema(
        [("card_id", pa.int64()), ("et", pa.int64()), ("_kafka_partition", pa.int32()), ("_kafka_offset", pa.int64()),
         ("is_deleted", pa.bool_()), ("amount", pa.float64()), ("qty", pa.int64()), ("merchant", pa.string())])))
    request = AggregateRequest.of(_group())
    times = [B + HOUR, B + 5 * HOUR + 7 * MIN + 3, B + 9 * HOUR, B - DAY, B + 30 * DAY]
    keys, ts = zip(*[(k, t) for t in times for k in (0, 1, 2, 3, 99)], strict=True)
    got = compute(_Engine(con), request, pa.array(keys, pa.int64()), np.array(ts, dtype=np.int64),
                  source_relation="src", event_time_ns="et")
    assert list(got) == [a.output_name for a in request.aggregates]
    for i, (k, t) in enumerate(zip(keys, ts, strict=True)):
        want = _brute(rows, k, t)
        have = {n: col[i].as_py() for n, col in got.items() if col[i].as_py() is not None}
        for name in set(want) | set(have):
            w, g = want.get(name), have.get(name)
            if name.startswith("qty_stddev"):
                assert g is not None and math.isclose(g, w, rel_tol=1e-15), (k, t, name, g, w)
            else:
                assert g == w and type(g) is type(w), (k, t, name, g, w)


def test_statements_take_only_the_known_dialects():
    with pytest.raises(ValueError, match="dialect must be one of"):
        statements(AggregateRequest.of(_group()), joined="j", hll={}, dialect="trino")
    with pytest.raises(ValueError, match="has no aggregate 'amount_sum_1d'"):
        AggregateRequest.of(_group(), ["amount_sum_1d"])


@pytest.mark.parametrize(("values", "pfcount"), [
    ([f"m{i}" for i in range(100)], 100),
    ([str(i) for i in range(-500, 2500)], 3028),
    ([repr(i / 7) for i in range(20000)], 19972),
    (["é✓", "x" * 13, ""], 3),
    ([], 0),
])
def test_hyperloglog_is_redis_own(values, pfcount):
    """PFADD of these texts then PFCOUNT on Redis 7.0.15 answered ``pfcount``."""
    registers: dict[int, int] = {}
    for v in values:
        reg, run = register_of(v)
        registers[reg] = max(registers.get(reg, 0), run)
    hist: dict[int, int] = {}
    for run in registers.values():
        hist[run] = hist.get(run, 0) + 1
    assert estimate(hist) == pfcount
    assert distinct_text(0.1) == "0.1" and distinct_text(12) == "12"


def test_entity_bounds_are_the_online_reads_windows():
    from schemas.tiles import window_bounds
    from sinks.offline.pit_aggregates import LIFETIME_LO, entity_bounds

    request = AggregateRequest.of(_group())
    rng = random.Random(3)
    ts = np.array([B + rng.randrange(-DAY, 10 * DAY) for _ in range(500)] + [B, B + HOUR, B + MIN], dtype=np.int64)
    got = entity_bounds(request, pa.array(["k"] * len(ts)), ts).to_pydict()
    for i, t in enumerate(ts.tolist()):
        for j, w in enumerate(request.windows):
            start, end = window_bounds(t, w) if w is not None else (LIFETIME_LO, window_bounds(t, MIN)[1])
            assert (got[f"lo{j}"][i], got["hi"][i]) == (start, end), (t, w)
