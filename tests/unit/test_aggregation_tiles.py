"""Tile arithmetic of aggregation groups (schemas/tiles.py) against brute force."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.tiles import (
    DAY_NS,
    HOUR_NS,
    MINUTE_NS,
    SIZE_NS,
    Level,
    hop_of,
    keep_from,
    read_tiles,
    retention_ns,
    tile_index,
    window_bounds,
    window_label,
    window_problem,
)

BOUND = {Level.MINUTE: 60, Level.HOUR: 106, Level.DAY: 171}


@st.composite
def windows(draw) -> int:
    hop = draw(st.sampled_from([Level.MINUTE, Level.HOUR, Level.DAY]))
    if hop is Level.MINUTE:
        return draw(st.integers(1, 60)) * MINUTE_NS
    if hop is Level.HOUR:
        return draw(st.integers(2, 48)) * HOUR_NS
    return draw(st.integers(3, 90)) * DAY_NS


times = st.integers(-10 * DAY_NS, 4_000_000_000 * 10**9)


def ceil_to(t: int, size: int) -> int:
    return -(-t // size) * size


@settings(max_examples=400, deadline=None)
@given(t=times, w=windows(), offsets=st.lists(st.integers(-100 * DAY_NS, 2 * DAY_NS), max_size=40))
def test_a_read_merges_exactly_the_tiles_of_its_window(t, w, offsets):
    """Brute force: an event counts iff its time is in (ceil_hop(T) - w, ceil_minute(T)]; the read's
    tiles hold exactly those events, each in exactly one tile, and there are few of them."""
    tiles = read_tiles(t, w)
    hop = hop_of(w)
    start, end = ceil_to(t, SIZE_NS[hop]) - w, ceil_to(t, MINUTE_NS)
    assert window_bounds(t, w) == (start, end)
    assert len(tiles) <= BOUND[hop]
    assert len(set(tiles)) == len(tiles)
    for et in [t + o for o in offsets] + [start, start + 1, end, end + 1]:
        inside = start < et <= end
        holding = [(lv, i) for lv, i in tiles if tile_index(lv, et) == i]
        assert len(holding) == (1 if inside else 0), (et, start, end, holding)


@settings(max_examples=300, deadline=None)
@given(w=windows(), k=st.integers(-1000, 10**6))
def test_at_a_whole_hop_the_window_is_exactly_t_minus_w_to_t(w, k):
    t = k * SIZE_NS[hop_of(w)]
    assert window_bounds(t, w) == (t - w, t)


@settings(max_examples=300, deadline=None)
@given(ws=st.lists(windows(), min_size=1, max_size=5), wm=times, later=st.integers(0, 3 * DAY_NS))
def test_reads_at_or_after_the_latest_event_never_need_a_pruned_tile(ws, wm, later):
    retention = retention_ns(ws)
    for w in ws:
        for level, i in read_tiles(wm + later, w):
            assert i >= keep_from(level, wm, retention[level]), (level, i, w)


@pytest.mark.parametrize(("text_ns", "label"), [(MINUTE_NS, "1m"), (90 * MINUTE_NS, "90m"), (HOUR_NS, "1h"),
                                                (36 * HOUR_NS, "36h"), (DAY_NS, "1d"), (None, "lifetime")])
def test_window_labels(text_ns, label):
    assert window_label(text_ns) == label


@pytest.mark.parametrize(("w", "match"), [
    (0, "1 minute to 90 days"), (30 * 10**9, "1 minute to 90 days"), (91 * DAY_NS, "1 minute to 90 days"),
    (90 * MINUTE_NS, "whole number of hours"), (3 * DAY_NS + HOUR_NS, "whole number of days"),
    (MINUTE_NS + 1, "whole number of minutes"),
])
def test_bad_windows_say_why(w, match):
    assert match in (window_problem(w) or "")


def test_tiles_are_left_open_right_closed():
    assert tile_index(Level.MINUTE, MINUTE_NS) == 0
    assert tile_index(Level.MINUTE, MINUTE_NS + 1) == 1
    assert tile_index(Level.DAY, 0) == -1
    assert tile_index(Level.LIFETIME, 123) == 0
