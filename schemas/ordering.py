"""Which record wins: the one order of two versions of a record, written once.

A *version* of a record is one put or delete of its identifier. Versions are ordered by

1. **event time**: the later event time wins (the SPEC's rule);
2. among equal event times, **the later write** wins: the one later in the group's Kafka topic.
   Kafka keeps every message of one key in one partition, in append order, so the offset
   says which of two writes came later, whoever produced them. The partition is compared
   before the offset only so that the order stays total when partitions are added to a
   topic and a key moves: it never decides between two writes of one key in one partition.

So the version key is ``(event_time_ns, kafka_partition, kafka_offset)`` and the greater key
wins. Equal keys are the same message read twice (a duplicate or a replay).

Everything that picks "the latest version" derives from this module, and
``tests/unit/test_ordering.py`` proves the derivations agree on random versions:

- the online store's write-if-newer Lua script receives :func:`script_args` and compares the
  three decimals in this order (``sinks/online/write_if_newer.lua``);
- the offline store's "latest row per identifier" SQL (``snapshot``, ``query``, the SPEC's
  queries as the README prints them) orders rows by :func:`latest_order_sql`;
- the point-in-time join packs the key into one integer, :func:`pit_key_sql`, because an
  ASOF join compares one column;
- test oracles use :func:`version_key`.

The offline store also records ``api_invocation_time`` and ``write_time``, the SPEC's
tie-breaks; the version key decides before they are reached, because they can tie (two
writes in one millisecond, one flush) where the Kafka position cannot.
"""

from __future__ import annotations

from typing import NamedTuple

# The offline table's columns that hold a version's Kafka position.
KAFKA_PARTITION_COLUMN = "_kafka_partition"
KAFKA_OFFSET_COLUMN = "_kafka_offset"

# The point-in-time key packs (event time, partition, offset) into one 128-bit integer:
# event time (signed 64 bits) << 64 | partition << 48 | offset. Bounds checked by pit_key.
PIT_PARTITION_BITS = 16
PIT_OFFSET_BITS = 48
_PIT_SHIFT = 2 ** (PIT_PARTITION_BITS + PIT_OFFSET_BITS)


class VersionKey(NamedTuple):
    """The key of one version; compare keys with ``<``/``>``: the greater key wins."""

    event_time_ns: int
    partition: int
    offset: int


def version_key(event_time_ns: int, partition: int, offset: int) -> VersionKey:
    """The key of the version written at (``partition``, ``offset``) with ``event_time_ns``."""
    return VersionKey(event_time_ns, partition, offset)


def wins(candidate: VersionKey, current: VersionKey | None) -> bool:
    """Whether ``candidate`` replaces ``current`` as the latest version (None: nothing yet)."""
    return current is None or candidate > current


def script_args(event_time_ns: int, partition: int, offset: int) -> list[str]:
    """ARGV[2..4] of write_if_newer.lua: the version key as canonical decimals, in key order.

    Decimal text because Lua numbers are doubles: a 19-digit nanosecond time would not
    compare exactly as a number.
    """
    return [str(event_time_ns), str(partition), str(offset)]


def latest_order_sql(event_time_column: str) -> str:
    """``ORDER BY`` terms (quoted names) that put the winning version of an identifier first."""
    # No column of the key is ever null in the offline table, so no NULLS clause is needed.
    return ", ".join(f"{c} DESC" for c in (event_time_column, KAFKA_PARTITION_COLUMN, KAFKA_OFFSET_COLUMN))


def pit_key(event_time_ns: int, partition: int, offset: int) -> int:
    """The version key as one integer, ordered as the key is (what :func:`pit_key_sql` computes)."""
    if not 0 <= partition < 2 ** PIT_PARTITION_BITS or not 0 <= offset < 2 ** PIT_OFFSET_BITS:
        raise ValueError(f"Kafka position ({partition}, {offset}) is outside the point-in-time key's range "
                         f"(partition < 2**{PIT_PARTITION_BITS}, offset < 2**{PIT_OFFSET_BITS})")
    return event_time_ns * _PIT_SHIFT + (partition << PIT_OFFSET_BITS) + offset


def pit_key_sql(event_time_ns_sql: str) -> str:
    """DuckDB expression of :func:`pit_key` over a row (a HUGEINT); ``event_time_ns_sql`` is an
    expression giving the event time in integer nanoseconds."""
    return (f"({event_time_ns_sql})::HUGEINT * {_PIT_SHIFT} + ({KAFKA_PARTITION_COLUMN}::HUGEINT << "
            f"{PIT_OFFSET_BITS}) + {KAFKA_OFFSET_COLUMN}")


def pit_bound_sql(timestamp_ns_sql: str) -> str:
    """DuckDB expression of the greatest key with event time at or before a timestamp: an entity
    row at that timestamp sees every version whose :func:`pit_key_sql` is at most this."""
    return f"({timestamp_ns_sql})::HUGEINT * {_PIT_SHIFT} + {_PIT_SHIFT - 1}"
