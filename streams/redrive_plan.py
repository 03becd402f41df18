"""What a redrive still has to do, and what it re-publishes (pure: no Kafka here).

The unit of redrive is a **source record and a store**: the poison message at (source topic,
partition, offset) that the online stage, the offline stage or both parked. Whatever its number
of dead letters, a source record is re-published at most once per store, and once redriven for a
store it is never redriven for it again.

Progress is recorded in a compacted topic (``schemas.names.redriven_topic``), one key per
(source record, store), in two steps around the re-publication:

1. ``publishing``, before the record is re-published, with the group topic's end offsets at that
   moment (``scan_from``);
2. ``done``, once Kafka acknowledged the re-published record, with where it landed.

A redrive that stopped between the two (a crash) leaves a ``publishing`` marker: the next redrive
reads the group topic from ``scan_from`` for a record whose ``fs-redrive-of`` header names that
source record. Found: it was published, so the marker becomes ``done`` and nothing is sent again.
Not found: it was not, and it is re-published. So a crash never sends a record twice, and the
offline table never gets a second row from a redrive.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import orjson

from schemas.errors import RecordValidationError
from schemas.group import FeatureGroup
from schemas.messages import OFFLINE, ONLINE, DeleteMessage, Message, PutMessage
from schemas.validate import compile_validator, validate_delete
from schemas.wire import encode
from streams.deadletter_records import DeadLetter, SourceRef

H_REDRIVE_OF = "fs-redrive-of"  # header of a re-published record: the source record it redrives
PUBLISHING, DONE = "publishing", "done"
_STORES = (ONLINE, OFFLINE)


@dataclass(frozen=True, slots=True)
class Marker:
    """What redrive recorded for one (source record, store)."""

    state: str                                 # PUBLISHING or DONE
    topic: str                                 # the group topic the record is (to be) re-published to
    scan_from: dict[int, int] = field(default_factory=dict)  # PUBLISHING: the topic's end offsets before
    redriven_to: tuple[int, int] | None = None  # DONE: (partition, offset); None: nothing had to be sent
    at_ms: int = 0


def marker_key(source: SourceRef, store: str) -> bytes:
    return f"{source.text()}|{store}".encode()


def parse_marker_key(key: bytes | None) -> tuple[SourceRef, str] | None:
    if not key:
        return None
    text, _, store = key.decode("utf-8", "replace").rpartition("|")
    source = SourceRef.parse(text)
    return (source, store) if source is not None and store in _STORES else None


def encode_marker(marker: Marker) -> bytes:
    return orjson.dumps({"state": marker.state, "topic": marker.topic,
                         "scan_from": {str(p): o for p, o in sorted(marker.scan_from.items())},
                         "redriven_to": list(marker.redriven_to) if marker.redriven_to else None,
                         "at_ms": marker.at_ms})


def decode_marker(value: bytes | None) -> Marker | None:
    """The marker, or None for a tombstone or bytes that are not one (ignored, never fatal)."""
    if value is None:
        return None
    try:
        obj = orjson.loads(value)
        to = obj.get("redriven_to")
        return Marker(state=obj["state"], topic=obj["topic"],
                      scan_from={int(p): int(o) for p, o in (obj.get("scan_from") or {}).items()},
                      redriven_to=(int(to[0]), int(to[1])) if to else None, at_ms=int(obj.get("at_ms") or 0))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, IndexError, AttributeError):
        return None


Markers = dict[tuple[SourceRef, str], Marker]


def fold_markers(messages: Iterable[tuple[bytes | None, bytes | None]]) -> Markers:
    """The latest marker per key, as the compacted topic keeps it (a tombstone removes the key)."""
    out: Markers = {}
    for key, value in messages:
        k = parse_marker_key(key)
        if k is None:
            continue
        marker = decode_marker(value)
        if marker is None:
            out.pop(k, None)
        else:
            out[k] = marker
    return out


@dataclass
class SourcePlan:
    """The dead letters of one source record and what redrive recorded about it."""

    source: SourceRef
    dead_letters: list[DeadLetter]
    stores: frozenset[str]          # stores whose worker parked it (known stages only)
    done: dict[str, Marker]         # store -> its DONE marker
    in_doubt: dict[str, Marker]     # store -> a PUBLISHING marker: an earlier redrive stopped midway

    @property
    def pending(self) -> frozenset[str]:
        """Stores that parked this record and have not had it redriven."""
        return self.stores - self.done.keys()

    @property
    def first(self) -> DeadLetter:
        return self.dead_letters[0]


def plan(dead_letters: Sequence[DeadLetter], markers: Markers) -> tuple[list[SourcePlan], list[DeadLetter]]:
    """Group ``dead_letters`` by source record and look up the markers. Returns the plans and the
    dead letters that cannot be redriven at all (no source headers, or a stage of no known store)."""
    plans: dict[SourceRef, SourcePlan] = {}
    unusable: list[DeadLetter] = []
    for dl in dead_letters:
        store = dl.store
        if dl.source is None or store is None:
            unusable.append(dl)
            continue
        p = plans.get(dl.source)
        if p is None:
            p = plans[dl.source] = SourcePlan(dl.source, [], frozenset(), {}, {})
        p.dead_letters.append(dl)
        p.stores = p.stores | {store}
    for p in plans.values():
        for store in p.stores:
            marker = markers.get((p.source, store))
            if marker is not None and marker.state == DONE:
                p.done[store] = marker
            elif marker is not None and marker.state == PUBLISHING:
                p.in_doubt[store] = marker
    return list(plans.values()), unusable


def revalidate(group: FeatureGroup, msg: Message, stores: frozenset[str]) -> Message | None:
    """``msg`` as the door would publish it now to ``group`` (its current definition), for the
    stores among ``stores`` that it targets and the group enables; None if no store needs it.

    Identity is kept: same id, event time and api_invocation_time; the record is validated and
    coerced by the SDK put's validator and stamped with the group's current version.
    Raises RecordValidationError when the record does not pass.
    """
    enabled = frozenset(s for s, on in ((ONLINE, group.online_enabled), (OFFLINE, group.offline_enabled)) if on)
    target = msg.target_stores & stores & enabled
    if not target:
        return None
    out: PutMessage | DeleteMessage
    if isinstance(msg, PutMessage):
        out = compile_validator(group).validate(msg.record, target_stores=target, ttl_seconds=msg.ttl_seconds,
                                                api_invocation_time_ns=msg.api_invocation_time_ns)
    else:
        out = validate_delete(group, msg.id, msg.event_time, mode=msg.mode, target_stores=target,
                              api_invocation_time_ns=msg.api_invocation_time_ns)
    for what, got, want in (("id", msg.id, out.id), ("event_time_ns", msg.event_time_ns, out.event_time_ns)):
        if got != want:
            raise RecordValidationError(f"feature group {group.name!r}: message {what} {got!r:.80} disagrees "
                                        f"with its record ({want!r:.80})", group=group.name, value=got)
    return out


def encode_redriven(msg: Message, source: SourceRef) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    """(key, value, headers) of a re-published record: the door's encoding plus ``fs-redrive-of``."""
    key, value, headers = encode(msg)
    return key, value, [*headers, (H_REDRIVE_OF, source.text().encode())]


def redrive_of(headers: Sequence[tuple[str, bytes]] | None) -> SourceRef | None:
    """The source record a group-topic message redrives (its ``fs-redrive-of`` header), if any."""
    for name, value in headers or ():
        if name == H_REDRIVE_OF and value is not None:
            return SourceRef.parse(value.decode("utf-8", "replace"))
    return None
