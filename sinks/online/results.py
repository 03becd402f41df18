"""What the online store's batch calls answer."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from sinks.online.status import WriteStatus


@dataclass
class BatchResult:
    """Outcome of :meth:`OnlineStore.apply_batch`.

    ``statuses`` is in the order of the items given, so a stream worker can route
    rejected messages (``rejected`` holds their id and the reason) to the dead-letter topic.
    """

    statuses: list[WriteStatus] = field(default_factory=list)
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (record id, reason)

    @property
    def counts(self) -> Counter[WriteStatus]:
        return Counter(self.statuses)

    def count(self, status: WriteStatus | str) -> int:
        status = WriteStatus(status)
        return sum(1 for s in self.statuses if s is status)

    def __str__(self) -> str:
        parts = ", ".join(f"{s.value}={n}" for s, n in sorted(self.counts.items()))
        return f"BatchResult({parts or 'empty'})"


@dataclass(frozen=True)
class FoundRecord:
    group: str
    record_id: str
    record: dict[str, Any]


@dataclass(frozen=True)
class RecordError:
    group: str
    record_id: str
    code: str  # "ValidationError" | "CorruptRecord" | "ServiceUnavailable"
    message: str


@dataclass
class BatchGetResult:
    """Outcome of :meth:`OnlineStore.batch_get`, shaped like SageMaker's BatchGetRecord.

    A record that does not exist, is expired or is deleted appears in none of the lists
    (as in the reference service); ``missing`` lists those for convenience.
    """

    records: list[FoundRecord] = field(default_factory=list)
    errors: list[RecordError] = field(default_factory=list)
    unprocessed: list[tuple[str, str]] = field(default_factory=list)  # (group, record id)
    missing: list[tuple[str, str]] = field(default_factory=list)

    def record(self, group: str, record_id: str) -> dict[str, Any] | None:
        for found in self.records:
            if found.group == group and found.record_id == record_id:
                return found.record
        return None
