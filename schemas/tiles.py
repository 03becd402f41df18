"""Time tiles of aggregation groups: which tiles an event folds into, which tiles a read merges.

Pure integer arithmetic on nanoseconds, so the processor (fold), the online read and the test
oracles agree bit for bit.

**Layout.** Three tile sizes, UTC-aligned: minute, hour, day, plus one lifetime tile. Tile
``(level, i)`` holds the events whose event time is in ``(i·size, (i+1)·size]``: left-open,
right-closed like the windows, so a window whose edges are tile boundaries is a union of tiles.

**Windows and their hop.** A sliding window ``w`` is a whole number of its *hop*:

| window | hop | tiles a read merges (at most) |
| --- | --- | --- |
| 1 min … 1 h | minute | w / 1 min (≤ 60) |
| > 1 h … 2 days | hour | w / 1 h − 1 hour tiles + 59 minute tiles (≤ 106) |
| > 2 days … 90 days | day | w / 1 d − 1 day tiles + 23 hour + 59 minute tiles (≤ 171) |

**The value read at T** covers the events with event time in ``(ceil_hop(T) − w, ceil_min(T)]``:
the newest edge at minute resolution (fresh), the oldest edge at the hop's. At a time T that is a
whole hop (a whole minute for windows up to an hour, a whole hour up to two days, a UTC midnight
beyond) this is exactly ``(T − w, T]``. Between, the window is shortened at its old edge by less
than one hop, and events stamped up to a minute after T are included. Bounded state needs a
bound of this kind: a window sliding by the minute over 90 days must tell apart every minute of
those 90 days.

**Retention.** A read at a time T at or after the key's latest event time ``wm`` uses only tiles
``(L, i)`` with ``i·size ≥ wm − retention(L)`` (:func:`retention_ns`), so every older tile is
pruned and an event falling only into pruned tiles changes nothing such a read can see.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

SECOND_NS = 1_000_000_000
MINUTE_NS = 60 * SECOND_NS
HOUR_NS = 60 * MINUTE_NS
DAY_NS = 24 * HOUR_NS

MIN_WINDOW_NS = MINUTE_NS
MAX_WINDOW_NS = 90 * DAY_NS
MINUTE_HOP_MAX_NS = HOUR_NS     # windows up to this slide by the minute
HOUR_HOP_MAX_NS = 2 * DAY_NS    # then by the hour up to this, then by the day


class Level(StrEnum):
    MINUTE = "m"
    HOUR = "h"
    DAY = "d"
    LIFETIME = "l"


SIZE_NS: dict[Level, int] = {Level.MINUTE: MINUTE_NS, Level.HOUR: HOUR_NS, Level.DAY: DAY_NS}
_ORDER = (Level.MINUTE, Level.HOUR, Level.DAY)

Tile = tuple[Level, int]


def hop_of(window_ns: int) -> Level:
    """The level a sliding window of ``window_ns`` slides by (see the module docstring)."""
    if window_ns <= MINUTE_HOP_MAX_NS:
        return Level.MINUTE
    if window_ns <= HOUR_HOP_MAX_NS:
        return Level.HOUR
    return Level.DAY


def window_problem(window_ns: int) -> str | None:
    """Why ``window_ns`` is not a valid sliding window, or None if it is."""
    if type(window_ns) is not int or not MIN_WINDOW_NS <= window_ns <= MAX_WINDOW_NS:
        return "a sliding window must be from 1 minute to 90 days"
    hop = hop_of(window_ns)
    if window_ns % SIZE_NS[hop]:
        unit = {Level.MINUTE: "minutes", Level.HOUR: "hours", Level.DAY: "days"}[hop]
        span = {Level.MINUTE: "up to 1 hour", Level.HOUR: "over 1 hour and up to 2 days",
                Level.DAY: "over 2 days"}[hop]
        return f"a window {span} slides by the {unit[:-1]}, so it must be a whole number of {unit}"
    return None


def levels_of(hop: Level) -> tuple[Level, ...]:
    """The tile levels a window of this hop merges (its hop and every finer one)."""
    return _ORDER[:_ORDER.index(hop) + 1]


def tile_index(level: Level, event_time_ns: int) -> int:
    """The index of the ``level`` tile holding an event at ``event_time_ns`` (lifetime: 0)."""
    if level is Level.LIFETIME:
        return 0
    return (event_time_ns - 1) // SIZE_NS[level]


def _ceil(t_ns: int, size_ns: int) -> int:
    return -(-t_ns // size_ns) * size_ns


def window_bounds(t_ns: int, window_ns: int) -> tuple[int, int]:
    """``(start, end)``: the read at ``t_ns`` covers event times in ``(start, end]``."""
    end = _ceil(t_ns, MINUTE_NS)
    start = _ceil(t_ns, SIZE_NS[hop_of(window_ns)]) - window_ns
    return start, end


def cover(start_ns: int, end_ns: int, levels: Iterable[Level]) -> list[Tile]:
    """The fewest tiles of ``levels`` whose union is exactly ``(start, end]`` (both whole minutes):
    from the start, the largest aligned tile that fits, so at most 59 minute + 23 hour tiles on
    either side of the day tiles."""
    allowed = [lv for lv in reversed(_ORDER) if lv in set(levels)]
    if start_ns % MINUTE_NS or end_ns % MINUTE_NS or Level.MINUTE not in allowed:
        raise ValueError(f"cover needs whole-minute bounds and minute tiles; got ({start_ns}, {end_ns}] "
                         f"with levels {allowed}")
    tiles: list[Tile] = []
    at = start_ns
    while at < end_ns:
        for level in allowed:
            size = SIZE_NS[level]
            if at % size == 0 and at + size <= end_ns:
                tiles.append((level, at // size))
                at += size
                break
    return tiles


def read_tiles(t_ns: int, window_ns: int) -> list[Tile]:
    """The tiles a read of a ``window_ns`` window at ``t_ns`` merges."""
    start, end = window_bounds(t_ns, window_ns)
    return cover(start, end, levels_of(hop_of(window_ns)))


def retention_ns(windows_ns: Iterable[int]) -> dict[Level, int]:
    """How far behind a key's latest event time each level's tiles are still read, for a group
    with these sliding windows: a window's own hop level back to ``w``; the finer levels back to
    one tile of the next level (the head of a coarser window). Levels no window uses are absent."""
    out: dict[Level, int] = {}
    for w in windows_ns:
        hop = hop_of(w)
        out[hop] = max(out.get(hop, 0), w)
        for finer, coarser in zip(_ORDER, _ORDER[1:], strict=False):
            if _ORDER.index(coarser) <= _ORDER.index(hop):
                out[finer] = max(out.get(finer, 0), SIZE_NS[coarser])
    return out


def keep_from(level: Level, latest_event_time_ns: int, retention: int) -> int:
    """The smallest ``level`` tile index a read at or after ``latest_event_time_ns`` may use."""
    return -(-(latest_event_time_ns - retention) // SIZE_NS[level])


def window_label(window_ns: int | None) -> str:
    """Canonical text of a window: ``10m``, ``6h``, ``7d``, ``lifetime``."""
    if window_ns is None:
        return "lifetime"
    for unit, size in (("d", DAY_NS), ("h", HOUR_NS), ("m", MINUTE_NS)):
        if window_ns % size == 0:
            return f"{window_ns // size}{unit}"
    raise ValueError(f"window {window_ns} ns is not a whole number of minutes")
