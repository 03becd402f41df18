"""The names of every Prometheus series featurestream's workers export, as PromQL would name them."""

from __future__ import annotations

import re

FEATURESTREAM_METRIC = re.compile(r"\bfeaturestream_[a-z_]+")
_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "summary": ("_count", "_sum")}


def exported_metric_names() -> set[str]:
    """Series names from the metrics the processor, the sink and the auditor register (streams/metrics.py),
    including the suffixed series of counters and histograms that have no sample yet."""
    from prometheus_client import REGISTRY

    import streams.metrics  # noqa: F401 - registers featurestream's metrics

    names = set()
    for family in REGISTRY.collect():
        names |= {s.name for s in family.samples}
        names |= {family.name + suffix for suffix in _SUFFIXES.get(family.type, ())}
        if family.type == "gauge":
            names.add(family.name)
    return {n for n in names if n.startswith("featurestream_")}
