"""streams.gc_tuning: long-lived objects leave the collector's sight, young passes get rarer."""

import gc

from streams.gc_tuning import YOUNG_THRESHOLD, settle_heap


def test_settle_heap_freezes_survivors_and_raises_the_young_threshold():
    before = gc.get_threshold()
    try:
        keep = [object() for _ in range(1000)]  # long-lived survivors
        settle_heap()
        assert gc.get_threshold()[0] == YOUNG_THRESHOLD
        assert gc.get_threshold()[1:] == before[1:]
        assert gc.get_freeze_count() >= len(keep)
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
