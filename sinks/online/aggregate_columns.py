"""The fold script's events for a batch's proven rows, read from its Arrow columns.

The batch path's counterpart of building them from messages (``FoldPlan.event_arg``): a replay or
a backfill folds tens of thousands of source events a second, and judging each one as a message
(decode, validate, a dict per record) cost more than the fold itself. Here the key and the
aggregated values come out of the columns one ``to_pylist`` per feature, and each event's ARGV
entry is built by the same ``FoldPlan.event_arg_of`` as a message's, so the bytes are the same
(``tests/unit/test_aggregate_columns.py`` compares the two on random batches of good and bad rows).
``schemas.batch`` proved every row given here, so nothing is checked again.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pyarrow as pa

from schemas.aggregate_plan import FoldPlan, folds_from_columns
from schemas.batch import BatchColumns
from schemas.messages import Message


class FoldEvent(NamedTuple):
    """One source event as the fold takes it: its aggregation key (None: not folded, a delete or a
    null key) and its ARGV entry, with where it came from (for a too-late event's dead letter)."""

    key: str | None
    arg: bytes
    partition: int
    offset: int
    event_time_ns: int


def message_fold_events(plan: FoldPlan, items: list[tuple[Message, int, int]]) -> list[FoldEvent]:
    """The events of source messages ``(message, partition, offset)``, in their order."""
    out = []
    for message, partition, offset in items:
        key = plan.key_of(message)
        arg = b"" if key is None else plan.event_arg(message, partition, offset)  # type: ignore[arg-type]
        out.append(FoldEvent(key, arg, partition, offset, message.event_time_ns))
    return out


def column_fold_events(plan: FoldPlan, cols: BatchColumns, rows: np.ndarray, partitions: np.ndarray,
                       offsets: np.ndarray) -> list[FoldEvent]:
    """The events of ``cols``' proven rows ``rows`` (``partitions``/``offsets`` per row), in that order.
    Deletes and rows whose key is null have key None: a delete does not un-count what came before."""
    n = len(rows)
    if n == 0:
        return []
    if not folds_from_columns(plan.group):
        raise ValueError(f"aggregation group {plan.group.name!r} folds a value its source's columns do not "
                         "hold as given (schemas.aggregate_plan.folds_from_columns): fold its events from the "
                         "messages")
    take = pa.array(rows, pa.int64())
    record = cols.record
    spec = plan.group.aggregation
    assert spec is not None
    keys = record.field(spec.by).take(take).to_pylist()
    values = [record.field(s.feature).take(take).to_pylist() for s in plan.states]
    deletes = cols.is_delete[rows].tolist()
    ets = cols.event_time_ns[rows].tolist()
    parts = partitions.tolist()
    offs = offsets.tolist()
    out = []
    build = plan.event_arg_of
    for i in range(n):
        k = keys[i]
        p, o, et = parts[i], offs[i], ets[i]
        if deletes[i] or k is None:
            out.append(FoldEvent(None, b"", p, o, et))
            continue
        out.append(FoldEvent(str(k), build(et, p, o, [v[i] for v in values]), p, o, et))
    return out


__all__ = ["FoldEvent", "column_fold_events", "message_fold_events"]
