"""The aggregation step of the online apply path: hand each aggregation group the events of its
source that a batch carried, folded exactly once into its tiles (sinks/online/aggregates.py).

Both processor engines, replay and rebuild reach it through the one apply step
(``streams/online/applier.py``), which calls it after the latest-value writes of the batch.
Events later than a group's allowed lateness come back as poison for the dead-letter topic, with
the reason; the fold also counts them in the key's state.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from schemas.aggregation_group import source_problem
from schemas.group import FeatureGroup
from schemas.messages import Message
from schemas.names import group_topic
from sinks.online.aggregates import AggregateStore
from streams.route import Poison, RawMessage


class AggregateStep:
    def __init__(self, store: AggregateStore, prefix: str, *, backfill: bool = False) -> None:
        self.store = store
        self.prefix = prefix
        self.backfill = backfill  # replay/rebuild: fold in the backfill lane, beside the live processor

    def __call__(self, sources: Mapping[str, list[tuple[Message, int, int]]], groups: Mapping[str, FeatureGroup],
                 batch: Sequence[RawMessage]) -> tuple[dict[tuple[str, str], int], list[Poison]]:
        """Fold ``sources`` (source group → its routed events) into every aggregation group over them;
        returns the counts by (aggregation group, outcome) and the too-late events as poison."""
        counts: dict[tuple[str, str], int] = {}
        poison: list[Poison] = []
        by_coords: dict[tuple[str, int, int], RawMessage] | None = None
        for agg in groups.values():
            if agg.aggregation is None or agg.aggregation.source not in sources:
                continue
            if source_problem(agg, groups.get(agg.aggregation.source)) is not None:
                continue  # a source created again after the group: never folded into the old state
            items = sources[agg.aggregation.source]
            result = self.store.fold(agg, items, backfill=self.backfill)
            for outcome, n in result.counts.items():
                counts[(agg.name, outcome)] = counts.get((agg.name, outcome), 0) + n
            if result.late:
                if by_coords is None:
                    by_coords = {(r.topic, r.partition, r.offset): r for r in batch}
                topic = group_topic(self.prefix, agg.aggregation.source)
                for i, reason in result.late:
                    _msg, partition, offset = items[i]
                    poison.append(Poison(by_coords[(topic, partition, offset)], reason))
        return counts, poison


def online_input_groups(groups: Mapping[str, FeatureGroup]) -> list[FeatureGroup]:
    """The groups whose topics the online path reads: every plain group with the online store, and
    every source of an aggregation group even with the online store off. An aggregation group has
    no topic of its own."""
    sources = {g.aggregation.source for g in groups.values() if g.aggregation is not None}
    return [g for g in groups.values() if not g.is_aggregation and (g.online_enabled or g.name in sources)]
