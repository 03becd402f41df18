"""What a dead letter says, read back from the dead-letter topic (pure: no Kafka here).

``streams.deadletter`` writes each poison message to ``<prefix>._deadletter`` with its original
key, value and headers plus ``fs-dlq-*`` headers (docs/wire-format.md). This module turns one
such message back into a :class:`DeadLetter`: where it came from (source topic, partition,
offset), which stage parked it and why, and the original message to redrive.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from schemas.errors import ValidationError
from schemas.eventtime import datetime_to_ns, parse_event_time
from schemas.messages import OFFLINE, ONLINE
from schemas.names import group_from_topic
from streams.route import RawMessage

H_REASON = "fs-dlq-reason"
H_SOURCE_TOPIC = "fs-dlq-source-topic"
H_SOURCE_PARTITION = "fs-dlq-source-partition"
H_SOURCE_OFFSET = "fs-dlq-source-offset"
H_STAGE = "fs-dlq-stage"
DLQ_HEADERS = frozenset({H_REASON, H_SOURCE_TOPIC, H_SOURCE_PARTITION, H_SOURCE_OFFSET, H_STAGE})


class SinceError(ValidationError):
    """A ``--since`` value that is neither ISO-8601 nor a relative duration."""


@dataclass(frozen=True, slots=True)
class SourceRef:
    """The coordinates of the poison message a dead letter copies: one source record."""

    topic: str
    partition: int
    offset: int

    def text(self) -> str:
        """``topic/partition/offset`` (Kafka topic names cannot contain '/')."""
        return f"{self.topic}/{self.partition}/{self.offset}"

    @classmethod
    def parse(cls, text: str) -> SourceRef | None:
        topic, _, rest = text.partition("/")
        partition, _, offset = rest.partition("/")
        if not topic or not partition.isdigit() or not offset.isdigit():
            return None
        return cls(topic, int(partition), int(offset))


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One message of the dead-letter topic."""

    partition: int             # of the dead-letter topic
    offset: int                # of the dead-letter topic
    timestamp_ms: int          # the dead letter's Kafka timestamp: when it was parked
    source: SourceRef | None   # None: the fs-dlq-source-* headers are missing or malformed
    group: str | None          # the feature group of the source topic (None: not a group topic)
    stage: str                 # "online", "offline", "replay-online", ...
    reason: str
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]  # the original message's headers, fs-dlq-* removed

    @property
    def store(self) -> str | None:
        """The store whose worker parked it (OnlineStore/OfflineStore), None for an unknown stage."""
        return store_of_stage(self.stage)

    def to_dict(self) -> dict[str, object]:
        src = self.source
        return {"group": self.group, "source_topic": src.topic if src else None,
                "source_partition": src.partition if src else None, "source_offset": src.offset if src else None,
                "stage": self.stage, "reason": self.reason, "time": iso_ms(self.timestamp_ms),
                "timestamp_ms": self.timestamp_ms, "deadletter_partition": self.partition,
                "deadletter_offset": self.offset}


def store_of_stage(stage: str) -> str | None:
    """Which store a stage feeds: the processor and online replays/rebuilds feed the online
    store, the sink and offline replays the offline store."""
    if stage == "online" or stage.endswith("-online"):
        return ONLINE
    if stage == "offline" or stage.endswith("-offline"):
        return OFFLINE
    return None


def dead_letter_from(raw: RawMessage, prefix: str) -> DeadLetter:
    """Read one dead-letter message; never raises (missing headers leave ``source`` None)."""
    original: list[tuple[str, bytes]] = []
    dlq: dict[str, str] = {}
    for name, value in raw.headers or ():
        text_name = name.decode("utf-8", "replace") if isinstance(name, bytes) else str(name)
        if text_name in DLQ_HEADERS:
            dlq[text_name] = (value or b"").decode("utf-8", "replace")
        else:
            original.append((text_name, value if value is not None else b""))
    topic = dlq.get(H_SOURCE_TOPIC, "")
    part, off = dlq.get(H_SOURCE_PARTITION, ""), dlq.get(H_SOURCE_OFFSET, "")
    source = SourceRef(topic, int(part), int(off)) if topic and part.isdigit() and off.isdigit() else None
    return DeadLetter(raw.partition, raw.offset, raw.timestamp_ms, source,
                      group_from_topic(prefix, topic) if topic else None, dlq.get(H_STAGE, ""),
                      dlq.get(H_REASON, ""), raw.key, raw.value, tuple(original))


def iso_ms(ms: int) -> str:
    """Epoch milliseconds as ISO-8601 UTC with milliseconds."""
    seconds, millis = divmod(ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


_RELATIVE = re.compile(r"([0-9]+)\s*(s|m|h|d|w)")
_NUMBER = re.compile(r"[+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?")
_UNIT_MS = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 7 * 86_400_000}


def parse_since(value: str | datetime | int, now_ms: int) -> int:
    """Epoch milliseconds from ``--since``: a relative duration back from ``now_ms`` (``30s``, ``30m``,
    ``1h``, ``7d``, ``2w``), an ISO-8601 UTC time, an aware datetime, or epoch milliseconds."""
    if isinstance(value, bool):
        raise SinceError(f"since must be a time, not {value!r}", value=value)
    if isinstance(value, int):
        return value
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise SinceError(f"since {value!r} has no time zone; give an aware datetime", value=value)
        return datetime_to_ns(value) // 1_000_000
    if not isinstance(value, str):
        raise SinceError(f"since must be text, a datetime or epoch milliseconds, not {type(value).__name__}",
                         value=value)
    text = value.strip()
    rel = _RELATIVE.fullmatch(text)
    if rel is not None:
        return now_ms - int(rel.group(1)) * _UNIT_MS[rel.group(2)]
    if _NUMBER.fullmatch(text):
        raise SinceError(f"since {value!r} is a number without a unit; write a duration like {text}m or {text}h, "
                         "or an ISO-8601 UTC time like 2026-10-02T12:00:00Z", value=value)
    try:
        return parse_event_time(text) // 1_000_000
    except ValidationError:
        raise SinceError(f"since {value!r} is neither a relative duration (30s, 30m, 1h, 7d, 2w) nor an "
                         "ISO-8601 UTC time like 2026-10-02T12:00:00Z", value=value) from None


def matches(dl: DeadLetter, *, group: str | None, since_ms: int | None) -> bool:
    return (group is None or dl.group == group) and (since_ms is None or dl.timestamp_ms >= since_ms)


def by_source(dead_letters: Sequence[DeadLetter]) -> dict[SourceRef | None, list[DeadLetter]]:
    """Dead letters by the source record they copy (both stages may park the same record)."""
    out: dict[SourceRef | None, list[DeadLetter]] = {}
    for dl in dead_letters:
        out.setdefault(dl.source, []).append(dl)
    return out
