"""Keep the garbage collector's full passes out of a long-running stream process's tail latency.

Measured in the online processor at 5,000 records/s: CPython's generation-2 passes ran every
2-3 s and took 50-160 ms each (faust's process holds ~100k long-lived objects, the apply
process ~40k), collecting nothing, and every one of them was a stall for the records in
flight. After start-up the long-lived objects (the app, clients, modules) are moved out of
the collector's sight with ``gc.freeze()``, and the young generation is allowed to grow larger,
so a batch in flight is not promoted into the old generations before it dies.

The offline sink only freezes (:func:`freeze_heap`). Its full passes walked pyiceberg's, pyarrow's
and the catalog's objects: 17-19 passes took 1.9-2.1 s of a 7.4-7.7 s run of 300k rows
(``bench/offline_sink.py``). Frozen, the same passes took 0.07-0.09 s in all. The raised young
threshold adds nothing there, and it would let the cyclic garbage a flush leaves (pyiceberg's
metadata objects: 4,369 per 300k rows, holding up to 73 MiB) wait for ~1.6M rows.
"""

from __future__ import annotations

import gc

# Allocations between young-generation passes (CPython's default is 700): a 1,000-record
# batch allocates tens of thousands of containers that all die together.
YOUNG_THRESHOLD = 50_000


def settle_heap() -> None:
    """Call once start-up is done: collect, freeze what survived, raise the young threshold."""
    freeze_heap()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, older, oldest)


def freeze_heap() -> None:
    """Call once start-up is done: collect, then freeze what survived; the thresholds stay as they are."""
    gc.collect()
    gc.freeze()
