"""When an online record expires: ExpiresAt = EventTime + TTL (the record's TTL over the group's)."""

from __future__ import annotations

NS_PER_SECOND = 1_000_000_000
NS_PER_MS = 1_000_000


def expires_at_ns(event_time_ns: int, record_ttl_seconds: int | None,
                  group_ttl_seconds: int | None) -> int | None:
    """Expires-at in ns since the epoch, or None when no TTL applies.

    A per-record TTL overrides the group's (SageMaker's TtlDuration on PutRecord).
    """
    ttl = record_ttl_seconds if record_ttl_seconds is not None else group_ttl_seconds
    if ttl is None:
        return None
    if type(ttl) is not int or ttl <= 0:
        raise ValueError(f"a TTL must be a positive whole number of seconds; got {ttl!r}")
    return int(event_time_ns) + ttl * NS_PER_SECOND


def is_expired(expires_at: int | None, now_ns: int) -> bool:
    """True once ``now_ns`` has reached ``expires_at`` (a record is never served at its expiry)."""
    return expires_at is not None and expires_at <= now_ns


def ns_to_expire_ms(expires_at: int) -> int:
    """PEXPIREAT argument: milliseconds, rounded up so Redis never evicts before the ns expiry.

    Reads compare ``__exp`` with the clock themselves, so rounding up never serves a record late.
    """
    return -(-int(expires_at) // NS_PER_MS)
