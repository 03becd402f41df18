"""Sorting a batch of raw topic messages into per-group work and poison messages.

Pure: given the raw messages and the known groups, it decides. The processor and the sink
call it (through :func:`route_batch`, which asks the registry once when the view is behind),
then hand each group's list to their store, and the poison list to the dead-letter publisher.
Nothing here raises on bad data: bad data is the poison list.

**One judgement.** Every message carries the version of its group that the door validated it
against (header ``fs-schema-version``). A worker whose view is older than that version has not
seen a change yet (a feature added, the TTL changed a moment ago): it never judges the message by
its older view, it fetches the newer one first. Versions only add features, so a message is
then checked against a definition that has every feature it may carry. What is left for the
dead-letter topic is what never passed a door: bytes that are not a featurestream message, a
topic without a group (deleted under its records), or a version the registry never had.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from operator import attrgetter
from typing import Any, NamedTuple

import numpy as np
from confluent_kafka import TIMESTAMP_LOG_APPEND_TIME

from schemas.aggregate_plan import folds_from_columns
from schemas.batch import BatchColumns, decode_batch
from schemas.errors import RecordValidationError, WireFormatError
from schemas.group import FeatureGroup
from schemas.messages import Message
from schemas.names import group_from_topic, parse_group_topic
from schemas.wire import check_against_group, decode
from streams.group_view import GroupView


class RawMessage(NamedTuple):
    """A message as it came off Kafka. A named tuple, not a frozen dataclass: the consume loop builds
    one per message, and a named tuple is one ``tuple.__new__`` call, where a frozen dataclass's
    ``__init__`` set each field through ``object.__setattr__`` (measured here: 1.0 against 2.5 µs)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]] | None
    timestamp_ms: int = 0
    # The broker stamped timestamp_ms when it appended the message (the topic's
    # message.timestamp.type is LogAppendTime): it then follows offset order within a partition.
    log_append_time: bool = False


@dataclass(frozen=True, slots=True)
class Poison:
    raw: RawMessage
    reason: str


@dataclass
class Routed:
    """One batch, sorted: ``work[group] = [(message, partition, offset), ...]`` in arrival order."""

    work: dict[str, list[tuple[Message, int, int]]] = field(default_factory=dict)
    poison: list[Poison] = field(default_factory=list)
    skipped: int = 0  # valid, but not for this store (disabled store, target_stores)
    unknown_groups: set[str] = field(default_factory=set)
    # Groups with messages stamped with a newer version than ``groups`` holds: left out of ``work``
    # and ``poison`` alike, to be routed again once the registry was asked (route_batch).
    behind: set[str] = field(default_factory=set)
    # Every valid put/delete of a group that aggregation groups aggregate, whatever its target
    # stores: their events (streams/online/aggregate_step.py). Filled only when asked (route's
    # ``aggregate_sources``), so the latest-value path pays nothing.
    sources: dict[str, list[tuple[Message, int, int]]] = field(default_factory=dict)
    # Messages of an earlier life's topic of a group deleted and created again (its records went
    # with that life): left alone, like a deleted group's purged records. Counted in ``skipped`` too.
    earlier_life: int = 0

    @property
    def complete(self) -> bool:
        """Every message was judged: nothing waits on a newer definition or an unknown group."""
        return not self.behind and not self.unknown_groups


def route_batch(batch: Sequence[RawMessage], view: GroupView, *, prefix: str,
                store: str) -> tuple[Routed, Mapping[str, FeatureGroup]]:
    """Route ``batch`` with ``view``'s groups; if some message names a group or a group version the
    view does not have yet, catch up with the registry (waiting for it: a ServiceUnavailableError
    leaves the batch to be retried, never dead-lettered) and judge the whole batch again."""
    groups = view.all()
    routed = route(batch, groups, prefix=prefix, store=store, aggregate_sources=_aggregated(groups, store))
    if not routed.complete:
        groups = view.all(fresh=True)
        routed = route(batch, groups, prefix=prefix, store=store, final=True,
                       aggregate_sources=_aggregated(groups, store))
    return routed, groups


def _aggregated(groups: Mapping[str, FeatureGroup], store: str) -> frozenset[str]:
    """The groups whose events some aggregation group folds (online only)."""
    if store != "OnlineStore":
        return frozenset()
    return frozenset(g.aggregation.source for g in groups.values() if g.aggregation is not None)


def route(batch: Sequence[RawMessage], groups: Mapping[str, FeatureGroup], *, prefix: str,
          store: str, final: bool = False, aggregate_sources: frozenset[str] = frozenset()) -> Routed:
    """Decode and sort ``batch`` for ``store`` ("OnlineStore" or "OfflineStore"), one message at a time.

    ``final``: ``groups`` is the registry's latest, so a message stamped with a newer version than
    it holds names a version the registry never had (poison). Otherwise such a message is left out
    and its group named in ``behind``."""
    out = Routed()
    for raw in batch:
        name = group_from_topic(prefix, raw.topic)
        if name is None:
            out.skipped += 1  # internal topic (the registry placeholder subscription)
            continue
        group = groups.get(name)
        if group is not None and group.topic(prefix) != raw.topic:
            _other_life(raw.topic, [raw], name, group, out, prefix=prefix, final=final)
            continue
        _judge(raw, name, group, out, store=store, final=final, aggregate_sources=aggregate_sources)
    return out


def _other_life(topic: str, raws: Sequence[RawMessage], name: str, group: FeatureGroup, out: Routed, *,
                prefix: str, final: bool) -> None:
    """Judge ``raws``, messages of ``topic``, a topic of group ``name`` that is not its life's in the
    view (schemas.names.group_topic): an earlier life's are left alone; a later life's wait for the
    registry (``behind``), and are poison if even its latest has no such life."""
    parsed = parse_group_topic(prefix, topic)
    theirs = -1 if parsed is None or parsed[1] is None else int(parsed[1])
    mine = -1 if group.topic_life is None else int(group.topic_life)
    if theirs < mine:
        out.earlier_life += len(raws)
        out.skipped += len(raws)
        return
    if not final:
        out.behind.add(name)
        return
    reason = (f"topic {topic!r} is of a life of feature group {name!r} that the registry does not have: the "
              f"group's topic is {group.topic(prefix)!r}")
    out.poison.extend(Poison(raw, reason) for raw in raws)


def _judge(raw: RawMessage, name: str, group: FeatureGroup | None, out: Routed, *, store: str,
           final: bool, aggregate_sources: frozenset[str] = frozenset()) -> None:
    """The per-record judgement of one message of group ``name``: into ``out``'s work, poison,
    skipped or behind. The batch path (route_columns) sends here every row it cannot prove."""
    if group is None:
        out.unknown_groups.add(name)
        out.poison.append(Poison(raw, f"unknown feature group {name!r}: topic {raw.topic!r} has no "
                                      "definition in the registry"))
        return
    try:
        decoded = decode(raw.key, raw.value, raw.headers)
        if decoded.schema_version > group.version:
            if not final:
                out.behind.add(name)
                return
            raise WireFormatError(
                f"the message names version {decoded.schema_version} of feature group {name!r} "
                f"(header fs-schema-version), but the registry's latest is version {group.version}: "
                "it was not written through a featurestream door for this group (or the group was "
                "deleted and created again)")
        msg = check_against_group(group, decoded)
    except (WireFormatError, RecordValidationError) as exc:
        out.poison.append(Poison(raw, str(exc)))
        return
    if name in aggregate_sources:  # folded into its aggregation groups, whatever its target stores
        out.sources.setdefault(name, []).append((msg, raw.partition, raw.offset))
    if not _store_enabled(group, store) or store not in msg.target_stores:
        out.skipped += 1
        return
    if raw.log_append_time and store == "OfflineStore":
        # The offline store's api_invocation_time is when the broker accepted the write, so
        # the SPEC's tie-break on it follows the order of writes (schemas/ordering.py),
        # not the clocks of the producers.
        msg = replace(msg, api_invocation_time_ns=raw.timestamp_ms * 1_000_000)
    out.work.setdefault(name, []).append((msg, raw.partition, raw.offset))


# ---------------------------------------------------------------- the batch path

@dataclass(frozen=True)
class GroupRows:
    """The rows of one group's topic that the batch decode proved valid and that target the store.

    ``rows`` index ``columns`` (every message of the topic in the batch, in batch order);
    ``partitions``/``offsets``/``api_invocation_time_ns`` are per selected row, in the same order
    (the api time already the broker's LogAppendTime where the offline store uses it)."""

    group: FeatureGroup
    topic: str
    columns: BatchColumns
    rows: np.ndarray
    partitions: np.ndarray
    offsets: np.ndarray
    api_invocation_time_ns: np.ndarray
    raws: Sequence[RawMessage] = ()  # the topic's messages, which ``rows`` index (dead letters, texts)


@dataclass
class RoutedColumns(Routed):
    """A batch routed the batch way: ``work`` holds only what went the per-record way, and so does
    ``sources``; ``source_rows`` holds, per source of aggregation groups, every row (put or delete,
    whatever its target stores) that the columns proved."""

    rows: dict[str, GroupRows] = field(default_factory=dict)
    source_rows: dict[str, GroupRows] = field(default_factory=dict)


# A topic's messages in one batch fewer than this are judged per record. pyarrow's JSON reader costs
# 0.5-0.9 ms a call however short its input (measured on the development machine, pyarrow 26), so
# decoding as columns cost 2.8 ms for a batch of 1 and 217 µs a record at 25, against 24-40 µs a record
# per record; the two cross at about 250 records (bench/prepare_cost.py prints the curve). The live
# processor's batches are small below a few thousand records/s, where that fixed cost made most of
# its CPU (README, Benchmarks: what bounds freshness at 5,000/s).
COLUMNS_MIN_ROWS = 256


def route_columns(batch: Sequence[RawMessage], groups: Mapping[str, FeatureGroup], *, prefix: str,
                  store: str, final: bool = False, aggregate_sources: frozenset[str] = frozenset(),
                  columns_from: int = COLUMNS_MIN_ROWS) -> RoutedColumns:
    """:func:`route`, with each topic's messages decoded in one call (``schemas.batch``).

    Judges exactly as :func:`route`: rows the columns prove valid are counted or selected here;
    every other row takes :func:`_judge`, the per-record judgement, which gives the exact reason.
    A group of ``aggregate_sources`` has its proven rows in ``source_rows`` too (the fold builds its
    events from the columns), unless an aggregation group over it folds a value the columns do not
    hold as given (``schemas.aggregate_plan.folds_from_columns``): then it is judged per record
    whole, and the fold takes its events as messages (``Routed.sources``). So is a topic with fewer than ``columns_from``
    messages in the batch (:data:`COLUMNS_MIN_ROWS`). Poison keeps the batch's order."""
    out = RoutedColumns()
    per_record = _sources_per_record(groups) if aggregate_sources else frozenset()
    by_topic = _indices_by_topic(batch)
    poison_at: list[int] = []  # batch index of each poison, to restore the batch order
    for topic, idx in by_topic.items():
        name = group_from_topic(prefix, topic)
        if name is None:
            out.skipped += len(idx)
            continue
        group = groups.get(name)
        raws = list(batch) if len(idx) == len(batch) else [batch[i] for i in idx]
        if group is not None and group.topic(prefix) != topic:
            before = len(out.poison)
            _other_life(topic, raws, name, group, out, prefix=prefix, final=final)
            poison_at.extend(idx[: len(out.poison) - before])
            continue
        if group is None:
            for i, raw in zip(idx, raws, strict=True):
                _judge(raw, name, None, out, store=store, final=final)
                poison_at.append(i)
            continue
        if name in per_record or len(idx) < columns_from:
            for i, raw in zip(idx, raws, strict=True):
                before = len(out.poison)
                _judge(raw, name, group, out, store=store, final=final, aggregate_sources=aggregate_sources)
                if len(out.poison) > before:
                    poison_at.append(i)
            continue
        cols = decode_batch(group, list(map(_KEY, raws)), list(map(_VALUE, raws)), list(map(_HEADERS, raws)))
        for j in np.flatnonzero(~cols.fast):
            before = len(out.poison)
            _judge(raws[j], name, group, out, store=store, final=final, aggregate_sources=aggregate_sources)
            if len(out.poison) > before:
                poison_at.append(idx[j])
        if name in aggregate_sources:
            proven = np.flatnonzero(cols.fast)
            out.source_rows[name] = _group_rows(group, topic, cols, proven, raws, cols.api_invocation_time_ns[proven])
        targets = cols.offline if store == "OfflineStore" else cols.online
        take = cols.fast & targets if _store_enabled(group, store) else np.zeros(len(raws), dtype=bool)
        out.skipped += int(np.count_nonzero(cols.fast & ~take))
        rows = np.flatnonzero(take)
        if not len(rows):
            continue
        api = cols.api_invocation_time_ns[rows]
        if store == "OfflineStore":
            chosen = _chosen(raws, rows)
            broker = np.fromiter(map(_LOG_APPEND_TIME, chosen), dtype=bool, count=len(chosen))
            if broker.any():
                stamped = np.fromiter(map(_TIMESTAMP_MS, chosen), dtype=np.int64, count=len(chosen))
                api = np.where(broker, stamped * 1_000_000, api)
        out.rows[name] = _group_rows(group, topic, cols, rows, raws, api)
    if len(poison_at) == len(out.poison) and poison_at != sorted(poison_at):
        order = sorted(range(len(poison_at)), key=poison_at.__getitem__)
        out.poison = [out.poison[k] for k in order]
    return out


def _group_rows(group: FeatureGroup, topic: str, cols: BatchColumns, rows: np.ndarray, raws: Sequence[RawMessage],
                api: np.ndarray) -> GroupRows:
    chosen = _chosen(raws, rows)
    return GroupRows(group, topic, cols, rows,
                     np.fromiter(map(_PARTITION, chosen), dtype=np.int64, count=len(chosen)),
                     np.fromiter(map(_OFFSET, chosen), dtype=np.int64, count=len(chosen)), api, raws)


def _sources_per_record(groups: Mapping[str, FeatureGroup]) -> frozenset[str]:
    """Sources with an aggregation group that must fold their events from messages."""
    return frozenset(g.aggregation.source for g in groups.values()
                     if g.aggregation is not None and not folds_from_columns(g))


def _indices_by_topic(batch: Sequence[RawMessage]) -> Mapping[str, Sequence[int]]:
    """Each topic's batch indices, in batch order. A batch of one topic (a backlog of one group, or a
    busy group's stream) is split with no loop per message."""
    topics = set(map(_TOPIC, batch))
    if len(topics) == 1:
        return {topics.pop(): range(len(batch))}
    by_topic: dict[str, list[int]] = {}
    for i, raw in enumerate(batch):
        by_topic.setdefault(raw.topic, []).append(i)
    return by_topic


def _chosen(raws: Sequence[RawMessage], rows: np.ndarray) -> Sequence[RawMessage]:
    """``raws[j]`` for each of ``rows`` (ascending, distinct); ``raws`` itself when that is every row."""
    return raws if len(rows) == len(raws) else [raws[j] for j in rows]


_KEY, _VALUE, _HEADERS = attrgetter("key"), attrgetter("value"), attrgetter("headers")
_TOPIC, _PARTITION, _OFFSET = attrgetter("topic"), attrgetter("partition"), attrgetter("offset")
_LOG_APPEND_TIME, _TIMESTAMP_MS = attrgetter("log_append_time"), attrgetter("timestamp_ms")


def route_batch_columns(batch: Sequence[RawMessage], view: GroupView, *, prefix: str, store: str,
                        columns_from: int = COLUMNS_MIN_ROWS) -> tuple[RoutedColumns, Mapping[str, FeatureGroup]]:
    """:func:`route_batch` the batch way: the same catch-up with the registry, then one more judgement."""
    groups = view.all()
    routed = route_columns(batch, groups, prefix=prefix, store=store, aggregate_sources=_aggregated(groups, store),
                           columns_from=columns_from)
    if not routed.complete:
        groups = view.all(fresh=True)
        routed = route_columns(batch, groups, prefix=prefix, store=store, final=True,
                               aggregate_sources=_aggregated(groups, store), columns_from=columns_from)
    return routed, groups


def _store_enabled(group: FeatureGroup, store: str) -> bool:
    return group.online_enabled if store == "OnlineStore" else group.offline_enabled


def raw_from_confluent(msg: Any) -> RawMessage:
    """A RawMessage from a confluent_kafka.Message."""
    kind, ts = msg.timestamp()
    return RawMessage(msg.topic(), msg.partition(), msg.offset(), msg.key(), msg.value(), msg.headers(), ts,
                      kind == TIMESTAMP_LOG_APPEND_TIME)
