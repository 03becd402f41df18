"""Ground truth for the online store, computed from the topic alone (never by featurestream):
the latest record per id by the version order of schemas/ordering.py."""

from __future__ import annotations

import orjson

from schemas.ordering import VersionKey, version_key, wins
from tests.integration.helpers import read_topic


def topic_records(stack, topic: str) -> list[tuple[int, int, dict]]:
    """(partition, offset, decoded JSON) of every featurestream message of ``topic``."""
    out = []
    for m in read_topic(stack, topic):
        try:
            out.append((m.partition(), m.offset(), orjson.loads(m.value())))
        except orjson.JSONDecodeError:
            pass
    return out


def expected_online_state(stack, topic: str) -> dict[str, dict | None]:
    """Latest record per id by (event time, write order), computed from the topic, not by featurestream."""
    latest: dict[str, tuple[VersionKey, dict]] = {}
    for partition, offset, value in topic_records(stack, topic):
        key = version_key(value["event_time_ns"], partition, offset)
        if wins(key, latest[value["id"]][0] if value["id"] in latest else None):
            latest[value["id"]] = (key, value)
    out: dict[str, dict | None] = {}
    for rid, (_, value) in latest.items():
        if value["op"] == "put":
            out[rid] = {k: v for k, v in value["record"].items() if v is not None}
        else:
            out[rid] = None
    return out


def online_state(store, group, ids: list[str]) -> dict[str, dict | None] | None:
    """What the online store serves for each of ``ids`` (None for an id it has no record of), read
    with BatchGetRecord 100 ids at a time; None as a whole while any read reports an error (a Redis
    still coming back). Compare it with :func:`expected_online_state`."""
    found: dict[str, dict | None] = dict.fromkeys(ids)
    for i in range(0, len(ids), 100):  # BatchGetRecord's limit per group
        got = store.online.batch_get([(group, ids[i:i + 100], None)])
        if got.errors:
            return None
        found.update({r.record_id: r.record for r in got.records})
    return found
