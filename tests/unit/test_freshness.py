"""Freshness: batches bucketed as Prometheus would bucket each record, exposed as a histogram that
Prometheus' parser reads, and p50/p99 estimated from the buckets as histogram_quantile does."""

from __future__ import annotations

import random

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from featurestream.cli.freshness_status import format_seconds, freshness_by_group
from schemas.wire import H_API_TIME
from streams.freshness import BUCKETS, NUMPY_FROM, FreshnessHistogram, count_batch, header_time_ns, quantile

NOW = 1_900_000_000_000_000_000
MS = 1_000_000


def _per_record(latencies_s: list[float]) -> list[float]:
    """What prometheus_client's own Histogram makes of the same latencies, one observe each (cumulative)."""
    h = Histogram("ref", "ref", buckets=BUCKETS, registry=CollectorRegistry())
    for s in latencies_s:
        h.observe(s)
    return [s.value for s in h.collect()[0].samples if s.name == "ref_bucket"]


def _cumulative(counts: list[int]) -> list[float]:
    out, total = [], 0
    for c in counts:
        total += c
        out.append(float(total))
    return out


def test_a_batch_is_bucketed_as_one_observe_per_record_would_be_on_both_paths() -> None:
    rng = random.Random(3)
    for size in (1, NUMPY_FROM - 1, NUMPY_FROM, 5000):
        # bounds exactly, just above them, and random values from 0 to past the last bucket
        ns = [round(b * 1e9) for b in BUCKETS] + [round(b * 1e9) + 1 for b in BUCKETS]
        ns += [rng.randrange(0, 900_000 * MS) for _ in range(size)]
        ns = ns[:size]
        got = count_batch([NOW - n for n in ns], NOW)
        assert got is not None and got.total == size
        assert _cumulative(got.counts) == _per_record([n / 1e9 for n in ns]), size
        assert abs(got.sum_s - sum(ns) / 1e9) < 1e-6 * max(1.0, got.sum_s)


def test_missing_times_are_not_observed_and_a_clock_ahead_counts_as_zero() -> None:
    for pad in (0, NUMPY_FROM):  # both paths
        assert count_batch([0] * (pad + 3), NOW) is None
        got = count_batch([0] * pad + [0, NOW + 5 * MS, NOW - 3 * MS], NOW)
        assert got is not None and got.total == 2
        assert got.counts[0] == 1 and got.counts[BUCKETS.index(0.005)] == 1  # 0 s -> le=0.001; 3 ms -> le=0.005


def test_header_time_is_read_from_raw_headers() -> None:
    assert header_time_ns([("fs-schema-version", b"3"), (H_API_TIME, b"123456")]) == 123456
    assert header_time_ns([(H_API_TIME, b"not a number")]) == 0
    assert header_time_ns(None) == 0 and header_time_ns([]) == 0


def test_the_histogram_is_exposed_per_store_and_group_and_read_back_as_p50_p99() -> None:
    registry = CollectorRegistry()
    hist = FreshnessHistogram()
    registry.register(hist)
    # online: 90 records at 2 ms, 10 at 400 ms, in two batches; offline: 50 at 40 s
    first = count_batch([NOW - 2 * MS] * 90, NOW)
    second = count_batch([NOW - 400 * MS] * 10, NOW)
    offline = count_batch([NOW - 40_000 * MS] * 50, NOW)
    assert first is not None and second is not None and offline is not None
    hist.add("online", "customers", first)
    hist.add("online", "customers", second)
    hist.add("offline", "customers", offline)
    text = generate_latest(registry).decode()
    assert 'featurestream_freshness_seconds_count{group="customers",store="online"} 100.0' in text
    assert 'featurestream_freshness_seconds_bucket{group="customers",le="+Inf",store="offline"} 50.0' in text
    fresh = freshness_by_group(text_string_to_metric_families(text))
    on, off = fresh[("online", "customers")], fresh[("offline", "customers")]
    assert on.count == 100 and off.count == 50
    assert 0.001 < on.p50_s <= 0.002          # in the bucket that holds 2 ms
    assert 0.2 < on.p99_s <= 0.5              # in the bucket that holds 400 ms
    assert 30 < off.p50_s <= 60 and 30 < off.p99_s <= 60
    # two workers of one role add up
    both = freshness_by_group(list(text_string_to_metric_families(text)) + list(text_string_to_metric_families(text)))
    assert both[("online", "customers")].count == 200


def test_quantile_interpolates_like_histogram_quantile() -> None:
    inf = float("inf")
    assert quantile(0.5, [(1.0, 0.0), (2.0, 10.0), (inf, 10.0)]) == 1.5
    assert quantile(0.5, [(1.0, 10.0), (inf, 10.0)]) == 0.5  # the first bucket starts at 0
    assert quantile(0.99, [(1.0, 0.0), (600.0, 0.0), (inf, 5.0)]) == 600.0  # past the last bound: that bound
    assert quantile(0.5, [(1.0, 0.0), (inf, 0.0)]) is None


def test_seconds_are_formatted_for_a_table_cell() -> None:
    assert [format_seconds(s) for s in (0.0012, 0.34, 2.5, 300)] == ["1.2ms", "340ms", "2.5s", "5.0m"]
