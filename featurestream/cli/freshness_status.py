"""What `featurestream status` says about freshness: p50/p99 per group and store, from the workers' /metrics.

Each worker serves ``featurestream_freshness_seconds{store, group}`` (streams/freshness.py); the
buckets of every worker of this host are added up per (store, group) and the quantiles estimated as
Prometheus' histogram_quantile does. They cover each worker's lifetime (a scrape holds no window);
Prometheus' ``rate()`` over the same buckets gives the recent figure (docs/operations.md).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from streams.freshness import METRIC, quantile


@dataclass(frozen=True)
class Freshness:
    p50_s: float
    p99_s: float
    count: int

    def text(self) -> str:
        return f"{format_seconds(self.p50_s)}/{format_seconds(self.p99_s)}"


def merge_buckets(families: Iterable[object]) -> dict[tuple[str, str], dict[float, float]]:
    """(store, group) -> upper bound -> cumulative count, summed over the given metric families
    (prometheus_client.parser's, from one or more workers)."""
    merged: dict[tuple[str, str], dict[float, float]] = {}
    for family in families:
        if getattr(family, "name", None) != METRIC:
            continue
        for sample in family.samples:  # type: ignore[attr-defined]
            if sample.name != METRIC + "_bucket":
                continue
            key = (sample.labels.get("store", ""), sample.labels.get("group", ""))
            bound = float(sample.labels["le"])
            per = merged.setdefault(key, {})
            per[bound] = per.get(bound, 0.0) + sample.value
    return merged


def freshness_by_group(families: Iterable[object]) -> dict[tuple[str, str], Freshness]:
    """(store, group) -> p50/p99 over the workers whose metric families are given."""
    out = {}
    for key, per in merge_buckets(families).items():
        buckets = sorted(per.items())
        p50, p99 = quantile(0.5, buckets), quantile(0.99, buckets)
        if p50 is None or p99 is None:
            continue
        out[key] = Freshness(p50, p99, int(buckets[-1][1]))
    return out


def format_seconds(seconds: float) -> str:
    """1.2ms, 340ms, 2.5s, 3.0m: short enough for a table cell."""
    if math.isnan(seconds):
        return "-"
    if seconds < 0.01:
        return f"{seconds * 1000:.1f}ms"
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 120:
        return f"{seconds:.1f}s"
    return f"{seconds / 60:.1f}m"
