"""streams.group_view: the one refresh rule every process uses for feature-group definitions."""

from __future__ import annotations

import threading

import pytest

from schemas.errors import GroupNotFoundError
from streams.group_view import GroupView
from tests.support.wait import wait_for


def make_view():
    calls = []
    now = [0.0]
    known: dict = {}

    def load():
        calls.append(1)
        return dict(known)

    return GroupView(load, max_age_s=2.0, clock=lambda: now[0]), calls, now, known


def test_a_miss_asks_the_registry_at_once_and_is_never_cached():
    view, calls, _, known = make_view()
    assert view.get("g") is None
    known["g"] = "G1"
    assert view.get("g") == "G1"  # a miss is asked again at once
    known["g"] = "G2"
    n = len(calls)
    assert view.get("g") == "G1" and len(calls) == n  # a hit younger than max_age: no registry call
    assert view.get("g", fresh=True) == "G2"


def test_a_stale_view_answers_at_once_and_refreshes_in_the_background():
    view, calls, now, known = make_view()
    known["g"] = "G2"
    assert view.get("g") == "G2"
    known["g"] = "G3"
    now[0] = 2.5
    assert view.get("g") == "G2"  # stale: answered at once, re-read in the background
    wait_for(lambda: view.get("g") == "G3", timeout_s=5, interval_s=0.01, what="the background refresh")
    view.forget("g")
    known["g"] = "G4"
    assert "g" not in view
    assert view.get("g") == "G4"


def test_a_failing_background_refresh_keeps_the_known_definitions():
    state = {"fail": False}
    now = [0.0]
    failed = threading.Event()

    def load():
        if state["fail"]:
            failed.set()
            raise ConnectionError("broker down")
        return {"g": "G1"}

    view = GroupView(load, max_age_s=1.0, clock=lambda: now[0])
    assert view.all() == {"g": "G1"}
    state["fail"] = True
    now[0] = 5.0
    assert view.get("g") == "G1"
    assert failed.wait(5)
    assert view.describe("g") == "G1"  # still answered from what the view knows
    with pytest.raises(ConnectionError):
        view.get("other")  # a miss must ask the registry, and says it could not


def test_describe_names_a_missing_group():
    view, *_ = make_view()
    with pytest.raises(GroupNotFoundError, match="nope"):
        view.describe("nope")


def test_refresh_if_older_waits_for_the_registry_only_when_the_view_is_that_old():
    # An idle processor's first batch: the view is caught up before judging it, so a group created
    # meanwhile (an aggregation group over a source it already knows) is seen.
    view, calls, now, known = make_view()
    view.refresh_if_older(1.5)  # never loaded: loads
    assert len(calls) == 1
    known["agg"] = "A1"
    now[0] = 1.0
    view.refresh_if_older(1.5)
    assert len(calls) == 1 and "agg" not in view
    now[0] = 1.6
    view.refresh_if_older(1.5)
    assert len(calls) == 2 and "agg" in view
