"""The aggregation step of the online apply path: hand each aggregation group the events of its
source that a batch carried, folded exactly once into its tiles (sinks/online/aggregates.py).

Both processor engines, replay and rebuild reach it through the one apply step
(``streams/online/applier.py``), which calls it after the latest-value writes of the batch.
Events later than a group's allowed lateness come back as poison for the dead-letter topic, with
the reason; the fold also counts them in the key's state.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from operator import itemgetter

from schemas.aggregation_group import source_problem
from schemas.group import FeatureGroup
from schemas.messages import Message
from sinks.online.aggregate_columns import FoldEvent, column_fold_events, message_fold_events
from sinks.online.aggregates import AggregateStore
from streams.route import GroupRows, Poison, RawMessage


@dataclass
class GroupFold:
    """One aggregation group's events of a batch, built and ready to fold (:meth:`AggregateStep.prepare`)."""

    group: FeatureGroup
    events: list[FoldEvent]
    source_topic: str  # the topic of the source's life whose events these are


class AggregateStep:
    def __init__(self, store: AggregateStore, prefix: str, *, backfill: bool = False) -> None:
        self.store = store
        self.prefix = prefix
        self.backfill = backfill  # replay/rebuild: fold in the backfill lane, beside the live processor

    def prepare(self, sources: Mapping[str, list[tuple[Message, int, int]]], source_rows: Mapping[str, GroupRows],
                groups: Mapping[str, FeatureGroup]) -> list[GroupFold]:
        """Every aggregation group's events from its source's rows in a batch (CPU only): the rows the
        columns proved (``source_rows``) and those judged per record (``sources``), merged back into
        the topic's order, as the fold needs each partition's events in offset order."""
        folds = []
        for agg in groups.values():
            spec = agg.aggregation
            if spec is None or (spec.source not in sources and spec.source not in source_rows):
                continue
            if source_problem(agg, groups.get(spec.source)) is not None:
                continue  # a source created again after the group: never folded into the old state
            topic = groups[spec.source].topic(self.prefix)
            plan = self.store.plan(agg)
            singles = message_fold_events(plan, sources.get(spec.source, []))
            proven = source_rows.get(spec.source)
            if proven is None:
                if singles:
                    folds.append(GroupFold(agg, singles, topic))
                continue
            events = column_fold_events(plan, proven.columns, proven.rows, proven.partitions, proven.offsets)
            if singles:  # rare: rows the columns could not prove, each at its place in the topic's order
                at = {(r.partition, r.offset): j for j, r in enumerate(proven.raws)}
                placed = [(int(j), e) for j, e in zip(proven.rows, events, strict=True)]
                placed += [(at[(e.partition, e.offset)], e) for e in singles]
                placed.sort(key=_FIRST)
                events = [e for _j, e in placed]
            if events:
                folds.append(GroupFold(agg, events, topic))
        return folds

    def fold(self, folds: Sequence[GroupFold], batch: Sequence[RawMessage]
             ) -> tuple[dict[tuple[str, str], int], list[Poison]]:
        """Fold each group's events; returns the counts by (aggregation group, outcome) and the
        too-late events as poison."""
        counts: dict[tuple[str, str], int] = {}
        poison: list[Poison] = []
        by_coords: dict[tuple[str, int, int], RawMessage] | None = None
        for f in folds:
            agg = f.group
            result = self.store.fold_events(agg, f.events, backfill=self.backfill)
            for outcome, n in result.counts.items():
                counts[(agg.name, outcome)] = counts.get((agg.name, outcome), 0) + n
            if result.late:
                if by_coords is None:
                    by_coords = {(r.topic, r.partition, r.offset): r for r in batch}
                for i, reason in result.late:
                    e = f.events[i]
                    poison.append(Poison(by_coords[(f.source_topic, e.partition, e.offset)], reason))
        return counts, poison


_FIRST = itemgetter(0)


def online_input_groups(groups: Mapping[str, FeatureGroup]) -> list[FeatureGroup]:
    """The groups whose topics the online path reads: every plain group with the online store, and
    every source of an aggregation group even with the online store off. An aggregation group has
    no topic of its own."""
    sources = {g.aggregation.source for g in groups.values() if g.aggregation is not None}
    return [g for g in groups.values() if not g.is_aggregation and (g.online_enabled or g.name in sources)]
