"""The Grafana dashboard (deploy/grafana) is valid JSON whose every query names metrics featurestream exports,
as the chart tests check for the alert rules; it shows freshness and parity."""

from __future__ import annotations

import json
from pathlib import Path

from tests.support.exported_metrics import FEATURESTREAM_METRIC, exported_metric_names

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "featurestream-dashboard.json"


def _queries(dashboard: dict) -> list[str]:
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            exprs.append(var["query"]["query"] if isinstance(var["query"], dict) else var["query"])
    return exprs


def test_every_dashboard_query_names_metrics_that_exist() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["panels"] and all(p["targets"] for p in dashboard["panels"])
    queries = _queries(dashboard)
    named = {m for q in queries for m in FEATURESTREAM_METRIC.findall(q)}
    ours = exported_metric_names()
    assert named and named <= ours, named - ours
    # the two things the dashboard is for: freshness per store, and the auditor's verdicts
    assert any('store="online"' in q and "featurestream_freshness_seconds_bucket" in q for q in queries)
    assert any('store="offline"' in q and "featurestream_freshness_seconds_bucket" in q for q in queries)
    assert {"featurestream_parity_mismatch_total", "featurestream_parity_in_flight_total"} <= named


def test_panels_have_unique_ids_and_ref_ids() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for p in dashboard["panels"]:
        refs = [t["refId"] for t in p["targets"]]
        assert len(refs) == len(set(refs)), p["title"]
