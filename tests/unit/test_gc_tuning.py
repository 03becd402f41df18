"""streams.gc_tuning: long-lived objects leave the collector's sight, young passes get rarer."""

import gc
import weakref

from streams.gc_tuning import YOUNG_THRESHOLD, freeze_heap, settle_heap


class _Node:
    me: object = None


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


def test_freeze_heap_freezes_survivors_and_collects_the_garbage_first_but_keeps_the_thresholds():
    before = gc.get_threshold()
    try:
        gc.unfreeze()
        keep = [[] for _ in range(1000)]  # long-lived survivors (containers: tracked)
        node = _Node()
        node.me = node  # a cycle that is garbage already: collected, not frozen for good
        gone = weakref.ref(node)
        del node
        freeze_heap()
        assert gc.get_threshold() == before
        assert gc.get_freeze_count() >= len(keep)
        assert gone() is None
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
