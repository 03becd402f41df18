"""The decoded form of a message on a group topic (see docs/wire-format.md).

Producers build these from validated input; consumers get them from ``schemas.wire.decode``.
Both sinks work only with these types, never with raw bytes or JSON.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

ONLINE = "OnlineStore"
OFFLINE = "OfflineStore"
BOTH_STORES: frozenset[str] = frozenset({ONLINE, OFFLINE})

SOFT_DELETE = "SoftDelete"
HARD_DELETE = "HardDelete"


@dataclass(frozen=True, slots=True)
class PutMessage:
    """One validated put: every feature of the group present (None where not given)."""

    id: str
    event_time_ns: int
    record: dict[str, Any]
    target_stores: frozenset[str] = BOTH_STORES
    ttl_seconds: int | None = None
    schema_version: int = 1
    api_invocation_time_ns: int = 0
    op: Literal["put"] = field(default="put", init=False)


@dataclass(frozen=True, slots=True)
class DeleteMessage:
    """One validated delete of record ``id`` at ``event_time_ns``."""

    id: str
    event_time_ns: int
    event_time: Any  # exactly as given: ISO string or epoch-seconds number
    mode: str = SOFT_DELETE
    target_stores: frozenset[str] = BOTH_STORES
    schema_version: int = 1
    api_invocation_time_ns: int = 0
    op: Literal["delete"] = field(default="delete", init=False)


Message = PutMessage | DeleteMessage
