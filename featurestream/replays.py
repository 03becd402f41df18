"""Replay and rebuild: re-apply a group's topic to a store through the live path's rules."""

from __future__ import annotations

from featurestream.sdk import FeatureStore
from streams.replay import ReplayResult, replay_topic


def replay_group(store: FeatureStore, group: str, *, target: str, from_ms: int | None = None,
                 to_ms: int | None = None, progress: bool = True) -> ReplayResult:
    g = store.describe_feature_group(group)
    bootstrap = store.config.require("kafka_bootstrap")
    if target == "online":
        from featurestream.online_worker import make_online_applier

        applier = make_online_applier(store.config, stage="replay-online")
        return replay_topic(bootstrap, store.registry.topic_of(g.name), applier, from_ms=from_ms, to_ms=to_ms,
                            progress=progress)
    if target == "offline":
        from featurestream.offline_replay import replay_offline

        return replay_offline(store, g, from_ms=from_ms, to_ms=to_ms, progress=progress)
    raise ValueError(f"target must be 'online' or 'offline', not {target!r}")


def rebuild_online(store: FeatureStore, group: str, *, progress: bool = True) -> tuple[int, ReplayResult]:
    g = store.describe_feature_group(group)
    removed = store.online.wipe_group(g)
    return removed, replay_group(store, group, target="online", progress=progress)
