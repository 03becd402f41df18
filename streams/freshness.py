"""Freshness: how long a record took from its door to a store, as a Prometheus histogram.

``featurestream_freshness_seconds{store, group}`` counts, per group, the time from a record's
``fs-api-invocation-time`` header (when the door accepted it) to when the store applied it: online,
when the processor's write-if-newer returned (applied, stale or duplicate alike: the store is then
up to date with it); offline, when the sink committed the snapshot holding its row. A header that is
0 or absent is not observed. Clocks of the door and the worker are compared, so a skew between hosts
shows up here; a negative latency counts as 0.

Cheap on the hot path: a batch is bucketed at once (:func:`count_batch`: numpy's ``searchsorted`` and
``bincount`` for large batches, a loop over ``bisect`` for small ones) and added to the histogram as counts, one addition per group
and batch (:class:`FreshnessHistogram`), instead of one ``Histogram.observe`` per record. The counts
are plain lists, so the faust engine's apply child can send them back to its parent with the rest
of the batch's summary.
"""

from __future__ import annotations

import math
import threading
from bisect import bisect_left
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from prometheus_client.core import REGISTRY, HistogramMetricFamily
from prometheus_client.registry import Collector

from schemas.wire import H_API_TIME

METRIC = "featurestream_freshness_seconds"
# 1 ms to 10 min, about two buckets per doubling of ten: p50 and p99 resolve within a bucket's
# width (at most 2.5x) whether a group is fresh in milliseconds (online) or in a minute (offline).
BUCKETS: tuple[float, ...] = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0,
                              20.0, 30.0, 60.0, 120.0, 300.0, 600.0)
_BOUNDS_NS_LIST = [round(b * 1e9) for b in BUCKETS]
_BOUNDS_NS = np.array(_BOUNDS_NS_LIST, dtype=np.int64)
NUMPY_FROM = 64
_API_TIME_KEY = H_API_TIME


@dataclass
class BucketCounts:
    """One batch's latencies, bucketed: ``counts[i]`` records in bucket ``i`` (not cumulative; the last
    is +Inf), ``sum_s`` their total in seconds."""

    counts: list[int]
    sum_s: float

    def merge(self, other: BucketCounts) -> None:
        self.counts = [a + b for a, b in zip(self.counts, other.counts, strict=True)]
        self.sum_s += other.sum_s

    @property
    def total(self) -> int:
        return sum(self.counts)


def count_batch(api_times_ns: Sequence[int], now_ns: int) -> BucketCounts | None:
    """Bucket the latencies from ``api_times_ns`` (0: not observed) to ``now_ns``; None if none is observed.

    numpy for batches of :data:`NUMPY_FROM` records or more (about 45 ns a record at 1000), a plain
    loop below that, where numpy's fixed cost (about 15 us a call) would dominate."""
    if len(api_times_ns) < NUMPY_FROM:
        counts = [0] * (len(BUCKETS) + 1)
        total = 0
        for t in api_times_ns:
            if t > 0:
                latency = now_ns - t if now_ns > t else 0
                counts[bisect_left(_BOUNDS_NS_LIST, latency)] += 1
                total += latency
        return BucketCounts(counts, total / 1e9) if any(counts) else None
    times = np.asarray(api_times_ns, dtype=np.int64)
    seen = times[times > 0]
    if seen.size == 0:
        return None
    latency = np.maximum(now_ns - seen, 0)
    binned = np.bincount(np.searchsorted(_BOUNDS_NS, latency, side="left"), minlength=len(BUCKETS) + 1)
    return BucketCounts(binned.tolist(), float(latency.sum()) / 1e9)


def header_time_ns(headers: Sequence[tuple[str, bytes]] | None) -> int:
    """The ``fs-api-invocation-time`` header of a raw message (0: absent or unreadable)."""
    for k, v in headers or ():
        if k == _API_TIME_KEY:
            try:
                return int(v)
            except (TypeError, ValueError):
                return 0
    return 0


class FreshnessHistogram(Collector):
    """``featurestream_freshness_seconds{store, group}``, fed with whole batches' counts. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._data: dict[tuple[str, str], BucketCounts] = {}

    def add(self, store: str, group: str, counts: BucketCounts) -> None:
        with self._lock:
            known = self._data.get((store, group))
            if known is None:
                self._data[(store, group)] = BucketCounts(list(counts.counts), counts.sum_s)
            else:
                known.merge(counts)

    def describe(self) -> Iterator[HistogramMetricFamily]:
        yield self._family()

    def collect(self) -> Iterator[HistogramMetricFamily]:
        family = self._family()
        with self._lock:
            items = [(k, list(v.counts), v.sum_s) for k, v in sorted(self._data.items())]
        for (store, group), counts, sum_s in items:
            cumulative = np.cumsum(counts).tolist()
            buckets = [(_le(b), c) for b, c in zip(BUCKETS, cumulative, strict=False)] + [("+Inf", cumulative[-1])]
            family.add_metric([store, group], buckets, sum_s)
        yield family

    @staticmethod
    def _family() -> HistogramMetricFamily:
        return HistogramMetricFamily(METRIC, "Time from a record's acceptance at a door (its fs-api-invocation-time "
                                     "header) to its store: online when the processor applied it to Redis, "
                                     "offline when the sink committed its row", labels=["store", "group"])


def _le(bound: float) -> str:
    return repr(float(bound))


def quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float | None:
    """The ``q`` quantile from cumulative ``(upper bound, count)`` buckets, sorted, ending with +Inf,
    interpolated within a bucket as Prometheus' histogram_quantile does (None: no observations).
    A quantile in the +Inf bucket answers the highest finite bound."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = bound, count
    return lower_bound


FRESHNESS = FreshnessHistogram()
REGISTRY.register(FRESHNESS)
