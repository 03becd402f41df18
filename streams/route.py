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
from typing import Any

from confluent_kafka import TIMESTAMP_LOG_APPEND_TIME

from schemas.errors import RecordValidationError, WireFormatError
from schemas.group import FeatureGroup
from schemas.messages import Message
from schemas.names import group_from_topic
from schemas.wire import check_against_group, decode
from streams.group_view import GroupView


@dataclass(frozen=True, slots=True)
class RawMessage:
    """A message as it came off Kafka."""

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
    """Decode and sort ``batch`` for ``store`` ("OnlineStore" or "OfflineStore").

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
        if group is None:
            out.unknown_groups.add(name)
            out.poison.append(Poison(raw, f"unknown feature group {name!r}: topic {raw.topic!r} has no "
                                          "definition in the registry"))
            continue
        try:
            decoded = decode(raw.key, raw.value, raw.headers)
            if decoded.schema_version > group.version:
                if not final:
                    out.behind.add(name)
                    continue
                raise WireFormatError(
                    f"the message names version {decoded.schema_version} of feature group {name!r} "
                    f"(header fs-schema-version), but the registry's latest is version {group.version}: "
                    "it was not written through a featurestream door for this group (or the group was "
                    "deleted and created again)")
            msg = check_against_group(group, decoded)
        except (WireFormatError, RecordValidationError) as exc:
            out.poison.append(Poison(raw, str(exc)))
            continue
        if name in aggregate_sources:
            out.sources.setdefault(name, []).append((msg, raw.partition, raw.offset))
        if not _store_enabled(group, store) or store not in msg.target_stores:
            out.skipped += 1
            continue
        if raw.log_append_time and store == "OfflineStore":
            # The offline store's api_invocation_time is when the broker accepted the write, so
            # the SPEC's tie-break on it follows the order of writes (schemas/ordering.py),
            # not the clocks of the producers.
            msg = replace(msg, api_invocation_time_ns=raw.timestamp_ms * 1_000_000)
        out.work.setdefault(name, []).append((msg, raw.partition, raw.offset))
    return out


def _store_enabled(group: FeatureGroup, store: str) -> bool:
    return group.online_enabled if store == "OnlineStore" else group.offline_enabled


def raw_from_confluent(msg: Any) -> RawMessage:
    """A RawMessage from a confluent_kafka.Message."""
    kind, ts = msg.timestamp()
    return RawMessage(msg.topic(), msg.partition(), msg.offset(), msg.key(), msg.value(), msg.headers(), ts,
                      kind == TIMESTAMP_LOG_APPEND_TIME)
