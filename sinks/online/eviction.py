"""Is Redis allowed to evict online records? Eviction is silent data loss for a feature store.

Redis evicts keys under ``maxmemory`` unless its policy is ``noeviction`` (then writes fail
loudly instead, and the processor retries them). ``volatile-*`` policies evict keys with a
TTL, which are exactly the records of groups with a TTL, before they expire.
"""

from __future__ import annotations

from typing import Any

SAFE_POLICY = "noeviction"


def eviction_policy(client: Any) -> str | None:
    """The server's ``maxmemory-policy``, or None where CONFIG is not allowed (managed Redis)."""
    try:
        got = client.config_get("maxmemory-policy")
    except Exception:  # noqa: BLE001 - CONFIG is often disabled: then we cannot tell
        return None
    if isinstance(got, dict) and got and not isinstance(next(iter(got.values())), str | bytes):
        got = next(iter(got.values()))  # Redis Cluster: {node: {...}}; one node speaks for the policy
    value = got.get("maxmemory-policy") if isinstance(got, dict) else None
    return value.decode() if isinstance(value, bytes) else value


def evicted_keys(client: Any) -> int | None:
    """Keys Redis has evicted since it started (summed over a cluster's nodes), or None if unknown."""
    try:
        stats = client.info("stats")
    except Exception:  # noqa: BLE001
        return None
    if isinstance(stats, dict) and "evicted_keys" in stats:
        return int(stats["evicted_keys"])
    if isinstance(stats, dict):  # Redis Cluster: {node: {...}}
        return sum(int(v.get("evicted_keys", 0)) for v in stats.values() if isinstance(v, dict))
    return None
