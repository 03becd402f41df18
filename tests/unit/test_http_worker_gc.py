"""A `serve` worker keeps what it made while starting out of later garbage collections (server.py)."""

from __future__ import annotations

import gc

from featurestream.http.server import freeze_startup_objects


def _collected_ids() -> set[int]:
    """Ids of the objects the collector still visits (the frozen ones are not among them)."""
    return {id(o) for o in gc.get_objects()}


def test_the_objects_made_at_startup_are_frozen_and_later_ones_are_not() -> None:
    startup = [[i] for i in range(1000)]  # long-lived containers, as a worker's imports and caches are
    before = gc.get_freeze_count()
    try:
        freeze_startup_objects()
        assert gc.get_freeze_count() >= before + len(startup)
        later = [[i] for i in range(10)]  # made after: still collected as before
        visited = _collected_ids()
        assert not any(id(o) in visited for o in startup)
        assert all(id(o) in visited for o in later)
    finally:
        gc.unfreeze()  # this test process goes on collecting as usual
