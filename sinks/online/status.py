"""What happened to each message written to the online store, and why a write was refused.

The integer codes are the ones ``write_if_newer.lua`` returns; keep both in step.
"""

from __future__ import annotations

from enum import StrEnum


class WriteStatus(StrEnum):
    APPLIED = "applied"      # the put is now the online record
    STALE = "stale"          # older than the stored record (a historic put or delete): offline only
    DUPLICATE = "duplicate"  # same (event time, partition, offset) as stored: a redelivery
    EXPIRED = "expired"      # newest, but its expires-at has passed: nothing served for it
    DELETED = "deleted"      # a newer soft/hard delete removed the record
    REJECTED = "rejected"    # refused (bad value, corrupt stored hash, a write Redis refused)
    SKIPPED = "skipped"      # not for the online store (target_stores, group online disabled)


# Codes returned by the Lua script (first element of its reply).
_CODE_TO_STATUS: dict[int, WriteStatus] = {
    1: WriteStatus.APPLIED,
    2: WriteStatus.STALE,
    3: WriteStatus.DUPLICATE,
    4: WriteStatus.EXPIRED,
    5: WriteStatus.DELETED,
    6: WriteStatus.REJECTED,
}
CODE_CORRUPT = 7  # stored meta fields are not ours; reported as REJECTED with a reason
CODE_FOREIGN = 8  # the key is not a hash (WRONGTYPE): not ours either; REJECTED with Redis's words
CODE_FAILED = 9   # Redis refused a write of this record (OOM, MISCONF...): it did not land; REJECTED with Redis's words


def _text(value: object) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def parse_script_replies(reply: object, count: int) -> list[tuple[int, str, str]]:
    """The script's flat reply ``[code, stored_et, stored_seq] * count`` → one tuple per record, as text.

    Raises ValueError on anything else: the script on the server is not ours.
    """
    if not isinstance(reply, list | tuple) or len(reply) != 3 * count \
            or not all(isinstance(code, int) for code in reply[0::3]):
        raise ValueError(f"unexpected reply from the write_if_newer script for {count} records: {reply!r:.200}")
    return [(reply[k], _text(reply[k + 1]), _text(reply[k + 2])) for k in range(0, len(reply), 3)]


def script_reply_codes(reply: object, count: int) -> list[int]:
    """The codes of the script's flat reply, one per record (what a batch needs when nothing is
    refused, without decoding the stored times); ValueError as :func:`parse_script_replies`."""
    codes = reply[0::3] if isinstance(reply, list | tuple) and len(reply) == 3 * count else None
    if codes is None or not all(type(code) is int for code in codes):
        raise ValueError(f"unexpected reply from the write_if_newer script for {count} records: {reply!r:.200}")
    return codes


def status_of(code: int) -> WriteStatus:
    """The status of a script reply code (the corrupt code counts as REJECTED)."""
    if code in (CODE_CORRUPT, CODE_FOREIGN, CODE_FAILED):
        return WriteStatus.REJECTED
    try:
        return _CODE_TO_STATUS[code]
    except KeyError:
        raise ValueError(f"unknown write_if_newer status code {code!r}; valid codes are 1-9") from None


def rejection_reason(group: str, record_id: str, op: str, event_time_ns: int, code: int,
                     stored_et: str, stored_seq: str) -> str | None:
    """A message naming group, record and times for a REJECTED reply, else None."""
    if code == CODE_CORRUPT:
        return (f"feature group {group!r}, record {record_id!r}: the stored online record has "
                f"corrupt metadata (__et={stored_et!r}, __seq={stored_seq!r}; expected decimal "
                f"nanoseconds and '<partition>:<offset>'); it was not written by featurestream. "
                f"Delete the key or wipe and replay the group")
    return None
