"""Shared builders for the offline writer/compaction tests (no tests here).

A 10-feature group with scalars and collections, message factories, and helpers that read
a table back through the catalog and return its (topic, partition, offset) coordinates.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from schemas.group import FeatureGroup
from schemas.messages import BOTH_STORES, ONLINE, DeleteMessage, PutMessage
from schemas.types import FeatureDefinition
from sinks.offline.catalog import read_live_table

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


def live_coordinates(fs: Any, table_uri: str) -> Counter:
    """Multiset of (topic, partition, offset) over all live rows: a count > 1 is a duplicate."""
    t = read_live_table(fs, table_uri, columns=["_kafka_topic", "_kafka_partition", "_kafka_offset"])
    if t.num_rows == 0:
        return Counter()
    return Counter(zip(t["_kafka_topic"].to_pylist(), t["_kafka_partition"].to_pylist(),
                       t["_kafka_offset"].to_pylist(), strict=True))


TOPIC = "fs.customers"


def write_small_files(fs: Any, root: str, group: FeatureGroup | None = None, *, partitions: int = 2,
                      batches: int = 6, batch_size: int = 40, hours: int = 2, start: int = 0
                      ) -> tuple[str, Counter, dict[tuple[str, int], int]]:
    """Many small committed files: ``batches`` flushes per Kafka partition, rows spread over
    ``hours`` event-time hours. Returns (table path, expected coordinates, committed offsets)."""
    from sinks.offline.writer import OfflineWriter, table_path_for

    group = group or make_group()
    w = OfflineWriter(fs, root)
    expected: Counter = Counter()
    committed: dict[tuple[str, int], int] = {}
    for p in range(partitions):
        offset = start
        for _ in range(batches):
            for _ in range(batch_size):
                ns = T0 + (offset % hours) * HOUR_NS + offset
                m = delete(offset, ns) if offset % 13 == 0 else put(offset, ns)
                w.add(group, m, TOPIC, p, offset)
                expected[(TOPIC, p, offset)] += 1
                offset += 1
            r = w.flush(TOPIC, p)
            committed[(TOPIC, p)] = r.next_offset
    return table_path_for(fs, root, group), expected, committed


def file_stats(fs: Any, table: str) -> dict[str, list[int]]:
    """Bytes of each live file, by hour partition."""
    from sinks.offline.catalog import list_live_files, relative
    from sinks.offline.layout import hour_partition_of

    out: dict[str, list[int]] = {}
    for p in list_live_files(fs, table):
        out.setdefault(hour_partition_of(relative(table, p)), []).append(fs.size(p))
    return out


def print_stats(label: str, stats: dict[str, list[int]]) -> None:
    for hour, sizes in sorted(stats.items()):
        print(f"{label}: {hour}: {len(sizes)} files, bytes/file min {min(sizes)} "
              f"mean {sum(sizes) // len(sizes)} max {max(sizes)}")
