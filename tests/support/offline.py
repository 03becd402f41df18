"""Shared builders for the offline writer/compaction tests (no tests here).

A 10-feature group with scalars and collections, message factories, and helpers that read
a table back through pyiceberg and return its (topic, partition, offset) coordinates.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from schemas.group import FeatureGroup
from schemas.messages import BOTH_STORES, ONLINE, DeleteMessage, PutMessage
from schemas.types import FeatureDefinition

HOUR_NS = 3_600 * 1_000_000_000
T0 = 1_700_000_000 * 1_000_000_000  # 2023-11-14T22:13:20Z


def make_group(name: str = "customers", creation_time: float = 1_700_000_000.0,
               offline_uri: str | None = None, offline_enabled: bool = True,
               id_type: str = "String") -> FeatureGroup:
    feats = [
        FeatureDefinition("customer_id", id_type),
        FeatureDefinition("event_time", "String"),
        FeatureDefinition("age", "Integral"),
        FeatureDefinition("score", "Fractional"),
        FeatureDefinition("city", "String"),
        FeatureDefinition("visits", "Integral"),
        FeatureDefinition("balance", "Fractional"),
        FeatureDefinition("tags", "String", "List"),
        FeatureDefinition("codes", "Integral", "Set"),
        FeatureDefinition("embedding", "Fractional", "Vector", 3),
    ]
    return FeatureGroup(name=name, record_identifier_name="customer_id", event_time_name="event_time",
                        features=feats, creation_time=creation_time, offline_uri=offline_uri,
                        offline_enabled=offline_enabled)


def put(i: int, event_time_ns: int | None = None, *, stores: frozenset[str] = BOTH_STORES,
        **overrides: Any) -> PutMessage:
    ns = T0 + i * 1_000_000 if event_time_ns is None else event_time_ns
    record: dict[str, Any] = {
        "customer_id": f"c-{i % 1000}", "event_time": "2023-11-14T22:13:20Z", "age": i % 90,
        "score": (i % 100) / 100.0, "city": f"city-{i % 17}", "visits": i, "balance": i * 1.5,
        "tags": ["a", f"t{i % 5}"], "codes": [i % 7, 100 + i % 3], "embedding": [0.1, 0.2, float(i % 10)],
    }
    record.update(overrides)
    return PutMessage(id=str(record["customer_id"]), event_time_ns=ns, record=record, target_stores=stores,
                      api_invocation_time_ns=ns + 5)


def delete(i: int, event_time_ns: int | None = None) -> DeleteMessage:
    ns = T0 + i * 1_000_000 if event_time_ns is None else event_time_ns
    return DeleteMessage(id=f"c-{i % 1000}", event_time_ns=ns, event_time="2023-11-14T22:13:20Z",
                         api_invocation_time_ns=ns + 5)


def online_only(i: int) -> PutMessage:
    return put(i, stores=frozenset({ONLINE}))


def table_coordinates(tables: Any, group: FeatureGroup) -> Counter:
    """Multiset of (topic, partition, offset) over the rows of the group's table (current
    snapshot, read through pyiceberg): a count > 1 is a duplicate."""
    table = tables.existing(group)
    if table is None or table.current_snapshot() is None:
        return Counter()
    t = table.scan(selected_fields=("_kafka_topic", "_kafka_partition", "_kafka_offset")).to_arrow()
    return Counter(zip(t["_kafka_topic"].to_pylist(), t["_kafka_partition"].to_pylist(),
                       t["_kafka_offset"].to_pylist(), strict=True))


TOPIC = "fs.customers"


def write_small_files(tables: Any, group: FeatureGroup, *, partitions: int = 2, batches: int = 6,
                      batch_size: int = 40, hours: int = 2, start: int = 0) -> Counter:
    """Many small commits: ``batches`` flushes per Kafka partition, rows spread over ``hours``
    event-time hours. Returns the expected coordinates."""
    from sinks.offline.writer import OfflineWriter

    w = OfflineWriter(tables)
    expected: Counter = Counter()
    for p in range(partitions):
        offset = start
        for _ in range(batches):
            for _ in range(batch_size):
                ns = T0 + (offset % hours) * HOUR_NS + offset
                m = delete(offset, ns) if offset % 13 == 0 else put(offset, ns)
                w.add(group, m, TOPIC, p, offset)
                expected[(TOPIC, p, offset)] += 1
                offset += 1
            w.flush(TOPIC, p)
    return expected
