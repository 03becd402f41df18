"""What the fold script is told, and what a read fetches, for one aggregation group. Pure.

A *state* is what the tiles of one source feature keep for its functions (kinds in
``schemas/aggregate_values.py``); every state is kept in every tile level the group's windows
use. The hash fields are ``<kind>|<feature>|<level>|<tile index>``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from schemas.aggregate_values import KIND_COUNT, KIND_DISTINCT, KIND_FRACTIONAL, KIND_INTEGRAL, KIND_LAST
from schemas.aggregation import NUMERIC_FUNCTIONS, Aggregate, Function
from schemas.group import FeatureGroup
from schemas.hll import distinct_text
from schemas.messages import Message, PutMessage
from schemas.tiles import (
    DAY_NS,
    Level,
    Tile,
    hop_of,
    keep_from,
    levels_of,
    read_tiles,
    retention_ns,
    tile_index,
)
from schemas.types import ScalarType

_LEVEL_ORDER = (Level.MINUTE, Level.HOUR, Level.DAY, Level.LIFETIME)


@dataclass(frozen=True)
class State:
    kind: str
    feature: str
    n: int = 0  # last_n: how many values a tile keeps


@dataclass(frozen=True)
class FoldPlan:
    group: FeatureGroup
    states: tuple[State, ...]
    levels: tuple[Level, ...]
    retention: dict[Level, int]
    ttl_ms: int | None  # the key's expiry after its last fold; None with a lifetime aggregate
    feature_types: dict[str, ScalarType]

    @classmethod
    def of(cls, group: FeatureGroup) -> FoldPlan:
        """The plan of an aggregation group; its features carry the source types it needs."""
        spec = group.aggregation
        if spec is None:
            raise ValueError(f"feature group {group.name!r} is not an aggregation group")
        types = _source_types(group)
        states: list[State] = []
        for feature in dict.fromkeys(a.feature for a in spec.aggregates):
            fns = {a.function for a in spec.aggregates if a.feature == feature}
            if fns & NUMERIC_FUNCTIONS:
                kind = KIND_INTEGRAL if types[feature] is ScalarType.INTEGRAL else KIND_FRACTIONAL
                states.append(State(kind, feature))
            elif Function.COUNT in fns:
                states.append(State(KIND_COUNT, feature))
            if Function.LAST_N in fns:
                n = max(a.n or 0 for a in spec.aggregates if a.feature == feature and a.function is Function.LAST_N)
                states.append(State(KIND_LAST, feature, n))
            if Function.DISTINCT in fns:
                states.append(State(KIND_DISTINCT, feature))
        used: set[Level] = set()
        for w in spec.windows_ns:
            used.update(levels_of(hop_of(w)))
        if spec.has_lifetime:
            used.add(Level.LIFETIME)
        retention = retention_ns(spec.windows_ns)
        ttl_ms = None if spec.has_lifetime else (max(retention.values()) + DAY_NS) // 1_000_000
        return cls(group, tuple(states), tuple(lv for lv in _LEVEL_ORDER if lv in used), retention, ttl_ms, types)

    def config_arg(self, *, backfill: bool = False) -> bytes:
        """ARGV[1] of the fold script; ``backfill``: the call folds in the backfill lane (replay,
        rebuild), not the live one (aggregate_fold.lua, "Two lanes")."""
        return orjson.dumps({"s": [[s.kind, s.feature, s.n] for s in self.states],
                             "l": [lv.value for lv in self.levels],
                             "ttl": "" if self.ttl_ms is None else str(self.ttl_ms), "b": int(backfill),
                             "c": self.group.life})

    def key_of(self, message: Message) -> str | None:
        """The aggregation key of a source message (decimal text for Integral), None if it has none.
        Deletes have none: a source delete does not un-count the events before it."""
        if not isinstance(message, PutMessage):
            return None
        value = message.record.get(self.group.aggregation.by)  # type: ignore[union-attr]
        if value is None:
            return None
        return str(value)

    def event_arg(self, message: PutMessage, partition: int, offset: int) -> bytes:
        """One event's ARGV entry of the fold script (documented at the top of the script)."""
        record = message.record
        return self.event_arg_of(message.event_time_ns, partition, offset, [record.get(s.feature) for s in self.states])

    def event_arg_of(self, et: int, partition: int, offset: int, values: Sequence[Any]) -> bytes:
        """The ARGV entry of an event at ``et`` whose aggregated values are ``values`` (one per state,
        in :attr:`states` order; None: null). The one builder for messages and for Arrow columns
        (``sinks/online/aggregate_columns.py``), so both give the same bytes."""
        lateness = self.group.aggregation.lateness_ns  # type: ignore[union-attr]
        tiles, keep, texts, squares = [], [], [], []
        for lv in self.levels:
            tiles.append(str(tile_index(lv, et)))
            keep.append("0" if lv is Level.LIFETIME else str(keep_from(lv, et, self.retention[lv])))
        for s, v in zip(self.states, values, strict=True):
            text, square = "", ""
            if v is not None:
                if s.kind == KIND_INTEGRAL:
                    text, square = str(v), str(v * v)
                elif s.kind == KIND_FRACTIONAL:
                    text = repr(float(v))  # shortest text that parses back to the same double
                elif s.kind == KIND_COUNT:
                    text = "1"
                elif s.kind == KIND_LAST:
                    text = orjson.dumps(v).decode()
                else:  # distinct: the value's canonical text (the offline side hashes the same text)
                    text = distinct_text(v)
            texts.append(text)
            squares.append(square)
        return orjson.dumps([str(partition), str(offset), str(et), str(et + lateness), tiles, keep, texts, squares])

    # ------------------------------------------------------------------ reads

    def state_of(self, agg: Aggregate) -> State:
        """The state an aggregate is read from."""
        if agg.function is Function.LAST_N:
            want = (KIND_LAST,)
        elif agg.function is Function.DISTINCT:
            want = (KIND_DISTINCT,)
        else:
            want = (KIND_INTEGRAL, KIND_FRACTIONAL, KIND_COUNT)
        return next(s for s in self.states if s.feature == agg.feature and s.kind in want)

    def tiles_of(self, agg: Aggregate, t_ns: int) -> list[Tile]:
        if agg.window_ns is None:
            return [(Level.LIFETIME, 0)]
        return read_tiles(t_ns, agg.window_ns)

    def fields_of(self, agg: Aggregate, t_ns: int) -> list[str]:
        state = self.state_of(agg)
        return [field_name(state, lv, i) for lv, i in self.tiles_of(agg, t_ns)]

    def aggregates(self, names: Sequence[str] | None) -> list[Aggregate]:
        spec = self.group.aggregation
        assert spec is not None
        if names is None:
            return list(spec.aggregates)
        wanted = set(names)
        return [a for a in spec.aggregates if a.output_name in wanted]


def folds_from_columns(group: FeatureGroup) -> bool:
    """Whether Arrow columns hold every value aggregation ``group`` folds exactly as the message does.
    They do, but for one case: a Fractional event-time feature that last_n or distinct takes is a
    double in the columns where the message may hold the integer it was given (kept as given:
    ``schemas/batch.py``), and those two functions keep the value's text, not its number. Read from
    the definition alone: routing asks it for every batch."""
    spec = group.aggregation
    et = group.event_time_name
    return spec is None or spec.types.get(et) != ScalarType.FRACTIONAL.value or not any(
        a.feature == et and a.function in (Function.LAST_N, Function.DISTINCT) for a in spec.aggregates)


def field_name(state: State, level: Level, index: int) -> str:
    return f"{state.kind}|{state.feature}|{level.value}|{index}"


def _source_types(group: FeatureGroup) -> dict[str, ScalarType]:
    """Each aggregated source feature's type, as recorded in the definition when it was built."""
    spec = group.aggregation
    assert spec is not None
    missing = sorted({a.feature for a in spec.aggregates} - set(spec.types))
    if missing:
        raise ValueError(f"aggregation group {group.name!r} does not record the type of source features "
                         f"{missing} (build it with schemas.aggregation_group.aggregation_group)")
    return {f: ScalarType(t) for f, t in spec.types.items()}
