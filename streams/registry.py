"""The feature-group registry: definitions in a compacted Kafka topic, the single source of truth.

Each message is keyed by group name; its value is ``FeatureGroup.to_dict()`` as JSON, and a
tombstone (null value) deletes the group. Every process folds the topic into a dict, and
catches up to the current end of the topic before answering, so two processes see each
other's changes without a restart (one watermark request when nothing changed).

Concurrent writers are resolved by the log itself (compare-and-set): the fold accepts a
definition only if it creates a missing group or carries exactly the next version of the
current one. A writer re-reads after producing and, if its write was not the one the fold
accepted, it lost the race and says so.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable

import orjson
from confluent_kafka import Consumer, ConsumerGroupState, KafkaError, KafkaException, Producer, TopicPartition

from schemas.errors import (
    DefinitionError,
    FeatureStoreError,
    GroupExistsError,
    GroupNotFoundError,
    ServiceUnavailableError,
)
from schemas.group import FeatureGroup
from schemas.names import group_topic, offline_table_uri, registry_topic
from schemas.ttl import Ttl
from schemas.types import FeatureDefinition
from streams.admin import admin_client, delete_topic, ensure_topic, wait_for_broker
from streams.contact import mark_answered, wait_budget
from streams.kafka_client import KafkaTarget, confluent_conf


class Registry:
    """Create, describe, list, update and delete feature groups.

    ``timeout_s`` is how long a call waits out a broker that answered before and is now away (the
    delivery timeout); a broker that never answered this process fails the first call within a
    few seconds (streams.contact).
    """

    def __init__(self, bootstrap: KafkaTarget, *, prefix: str = "featurestream", offline_base_uri: str | None = None,
                 timeout_s: float = 10.0, topic_delete_grace_s: float = 15.0) -> None:
        self.bootstrap = bootstrap
        self.topic_delete_grace_s = topic_delete_grace_s
        self.prefix = prefix
        self.topic = registry_topic(prefix)
        self.offline_base_uri = offline_base_uri
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._groups: dict[str, FeatureGroup] = {}
        # Names the registry topic shows deleted (tombstones are kept 7 days, see _ensure_ready): a
        # group created again under one of them gets a topic of its own life (FeatureGroup.topic_life).
        # The value is the deleted life's definition when the topic still had it (None once compacted).
        self._deleted: dict[str, FeatureGroup | None] = {}
        self._position = 0
        self._consumer: Consumer | None = None
        self._offsets: Consumer | None = None
        self._producer: Producer | None = None
        self._admin = admin_client(bootstrap, timeout_s=timeout_s)
        self._ready = False

    # -- setup ---------------------------------------------------------------------------
    def _ensure_ready(self) -> None:
        if self._ready:
            return
        wait_for_broker(self.bootstrap, timeout_s=wait_budget(self.bootstrap, self.timeout_s))
        ensure_topic(self._admin, self.topic, partitions=1, replication_factor=1, config={
            "cleanup.policy": "compact",
            # Keep tombstones long enough for every reader to see a delete.
            "delete.retention.ms": str(7 * 24 * 3600 * 1000),
        })
        conf = confluent_conf(self.bootstrap, {
            "group.id": "featurestream-registry-reader",  # required by librdkafka; never committed
            "enable.auto.commit": False,
            "enable.partition.eof": False,
            "log_level": 0,
        })
        # Every read asks for the end offset first, through a consumer that never fetches:
        # librdkafka answers that question only after the fetch long-poll on the same connection
        # returns. The reading consumer then long-polls at librdkafka's default 500 ms (a new
        # record ends the poll at once). It used to poll every 5 ms to keep that question fast,
        # which cost the broker 200 fetch requests a second per registry reader (every SDK
        # client, processor and sink has one): ~0.05 of a core each, measured.
        self._offsets = Consumer(conf)
        self._consumer = Consumer(conf)
        self._consumer.assign([TopicPartition(self.topic, 0, 0)])
        self._producer = Producer(confluent_conf(self.bootstrap, {
            "enable.idempotence": True,
            "acks": "all",
            "message.timeout.ms": int(self.timeout_s * 1000),
            "log_level": 0,
        }))
        self._ready = True

    def close(self) -> None:
        for consumer in (self._consumer, self._offsets):
            if consumer is not None:
                consumer.close()
        self._consumer = self._offsets = None
        self._ready = False

    # -- reading -------------------------------------------------------------------------
    def refresh(self) -> dict[str, FeatureGroup]:
        """Catch up with the registry topic; return the current groups by name."""
        with self._lock:
            self._ensure_ready()
            assert self._consumer is not None and self._offsets is not None
            high = self._end_offset()
            deadline = time.monotonic() + self.timeout_s
            while self._position < high:
                if time.monotonic() > deadline:
                    raise ServiceUnavailableError(f"could not read the registry topic {self.topic!r} up to "
                                                  f"offset {high} within {self.timeout_s:.0f} s")
                # poll, not consume(n): consume waits for all n messages or the whole timeout.
                msg = self._consumer.poll(0.5)
                if msg is None:
                    continue
                if msg.error():
                    if msg.error().code() == KafkaError._PARTITION_EOF:
                        continue
                    raise ServiceUnavailableError(f"registry read failed: {msg.error()}")
                self.fold(msg.key(), msg.value())
                self._position = msg.offset() + 1
            return dict(self._groups)

    def _end_offset(self) -> int:
        """The registry topic's end offset, waiting out a broker outage up to ``timeout_s``."""
        assert self._offsets is not None
        deadline = time.monotonic() + self.timeout_s
        while True:
            # Short attempts in a loop, so a broker that comes back is noticed within seconds.
            attempt = max(0.5, min(5.0, deadline - time.monotonic()))
            try:
                _, high = self._offsets.get_watermark_offsets(TopicPartition(self.topic, 0), timeout=attempt,
                                                               cached=False)
                mark_answered(self.bootstrap)
                return int(high)
            except KafkaException as exc:
                if time.monotonic() >= deadline:
                    raise ServiceUnavailableError(
                        f"Kafka at {self.bootstrap} did not answer for the registry topic {self.topic!r} within "
                        f"{self.timeout_s:g} s (the delivery timeout): {exc}") from exc

    def fold(self, key: bytes | None, value: bytes | None) -> None:
        """Fold one registry entry into the view (compare-and-set: see the module docstring)."""
        if key is None:
            return
        name = key.decode("utf-8", "replace")
        if value is None:
            gone = self._groups.pop(name, None)
            self._deleted[name] = gone or self._deleted.get(name)
            return
        try:
            group = FeatureGroup.from_dict(orjson.loads(value))
        except (ValueError, TypeError, KeyError):
            return  # a foreign or corrupt registry entry must not break every reader
        current = self._groups.get(name)
        # Compare-and-set over the log: see the module docstring.
        if current is None or group.version == current.version + 1:
            self._groups[name] = group

    def list(self) -> list[FeatureGroup]:
        return sorted(self.refresh().values(), key=lambda g: g.name)

    def describe(self, name: str) -> FeatureGroup:
        group = self.refresh().get(name)
        if group is None:
            raise GroupNotFoundError(name)
        return group

    def get(self, name: str) -> FeatureGroup | None:
        return self.refresh().get(name)

    def topic_of(self, group: FeatureGroup | str) -> str:
        """The topic of ``group``'s life; given a name, of the registered group's current life
        (``<prefix>.<name>`` when no group of that name is registered)."""
        if isinstance(group, str):
            found = self.refresh().get(group)
            return found.topic(self.prefix) if found is not None else group_topic(self.prefix, group)
        return group.topic(self.prefix)

    # -- writing -------------------------------------------------------------------------
    def create(self, group: FeatureGroup) -> FeatureGroup:
        """Register ``group`` (creation time, version and offline location are set here) and create its topic."""
        if group.name in self.refresh():
            raise GroupExistsError(group.name)
        now = time.time()
        with self._lock:
            before = self._deleted.get(group.name)
        while before is not None and int(before.creation_time) == int(now):
            # The deleted life was created in this very second, and a table's location is
            # <group>-<creation second> (the reference's layout): wait for the next second, so the two
            # lives' files never share a location (the deleted life's purge would delete this one's).
            time.sleep(int(now) + 1.001 - now)
            now = time.time()
        offline_uri = group.offline_uri
        if group.offline_enabled and offline_uri is None and self.offline_base_uri:
            offline_uri = offline_table_uri(self.offline_base_uri, group.name, int(now))
        if group.offline_enabled and offline_uri is None:
            raise DefinitionError(
                f"feature group {group.name!r} has the offline store enabled but no offline location: set "
                "FEATURESTREAM_OFFLINE_URI (s3://bucket/prefix or a local path) or create it with --no-offline",
                group=group.name)
        final = _replace(group, creation_time=now, version=1, offline_uri=offline_uri)
        if final.aggregation is None:
            # A name deleted before gets a topic of this life's own. A running consumer does not
            # notice a topic deleted and created again under the same name (librdkafka's regex
            # subscription, measured: the new topic unassigned minutes later), and a consumer
            # group's offsets committed for the old topic would apply to the new one.
            with self._lock:
                reused = final.name in self._deleted
            final = _replace(final, topic_life=final.life if reused else None)
        if final.aggregation is not None:
            # Checked against the source as it is now (a definition built elsewhere, or long ago).
            from schemas.aggregation_group import aggregation_group

            source = self.refresh().get(final.aggregation.source)
            rebuilt = aggregation_group(final.name, final.aggregation, source, description=final.description)
            final = _replace(rebuilt, creation_time=now, version=1)
        else:
            # The topic first: a registered group must always have its topic. An aggregation group
            # has none: nothing is written to it, its source's topic is its input.
            ensure_topic(self._admin, final.topic(self.prefix), partitions=final.partitions,
                         replication_factor=final.replication_factor, config=_topic_config(final))
        self._write(final.name, final)
        won = self.refresh().get(final.name)
        if won is None or won.to_dict() != final.to_dict():
            if won is not None:
                self._write(won.name, won)  # keep the winner as the key's latest value under compaction
            raise GroupExistsError(final.name)
        return final

    def update(self, name: str, *, add_features: Iterable[FeatureDefinition] = (),
               ttl: Ttl | None | type[_Keep] = None, description: str | None = None) -> FeatureGroup:
        """Add features and/or change the TTL (``ttl=Registry.CLEAR_TTL`` removes it)."""
        current = self.describe(name)
        updated = current
        adds = list(add_features)
        if adds:
            updated = updated.with_added_features(adds)
        if ttl is not None:
            updated = updated.with_ttl(None if ttl is _ClearTtl else ttl)  # type: ignore[arg-type]
        if description is not None and description != updated.description:
            updated = _replace(updated, description=description, version=updated.version + 1)
        if updated is current:
            return current
        # Several changes in one call count as one version step.
        updated = _replace(updated, version=current.version + 1)
        self._write(name, updated)
        won = self.refresh().get(name)
        if won is None or won.to_dict() != updated.to_dict():
            raise DefinitionError(f"feature group {name!r} was changed concurrently by another client; "
                                  "describe it and try again", group=name)
        return updated

    CLEAR_TTL: type[_ClearTtl]

    def delete(self, name: str, *, on_purge: Callable[[FeatureGroup], None] | None = None,
               after_delete: Callable[[FeatureGroup], None] | None = None) -> FeatureGroup:
        """Remove the group and its topic.

        ``on_purge`` runs first: if it fails (Redis or S3 down), the group is kept and can be deleted
        again. Then the tombstone, so that every worker stops taking the group's records; the online
        processors letting go of its topic (plain groups); ``after_delete``; the topic.

        ``after_delete`` is for what a running worker could write again: the offline table and its
        files. Purged before the tombstone, a sink flushing rows it had buffered created the table again
        at the purged location, and the purge then deleted that table's files under its catalog entry
        (seen in a test). After it, a sink that meets the table missing creates nothing
        (``OfflineTables.is_current``). If it fails, the group stays deleted and the error says what is left.
        """
        group = self.describe(name)
        if on_purge is not None:
            on_purge(group)
        self._write(name, None)
        topic = None if group.is_aggregation else group.topic(self.prefix)
        if topic is not None:
            self._wait_until_unassigned(topic)
        try:
            if after_delete is not None:
                after_delete(group)
        except FeatureStoreError as exc:
            kind = ServiceUnavailableError if isinstance(exc, ServiceUnavailableError) else FeatureStoreError
            raise kind(f"feature group {name!r} is deleted, but purging its offline data failed: {exc}. What "
                       f"may be left: its offline files at {group.offline_uri}") from exc
        finally:
            if topic is not None:
                delete_topic(self._admin, topic)
            self.refresh()
        return group

    def _wait_until_unassigned(self, topic: str) -> None:
        """Wait (bounded) until no online processor holds a partition of ``topic``.

        Running processors watch the registry and unsubscribe from a deleted group's topic when
        they see its tombstone; deleting the topic while one of them still has it assigned makes
        aiokafka fail inside faust's fetcher, so the topic is deleted only once they let go.
        """
        group_id = f"{self.prefix}-online"
        deadline = time.monotonic() + self.topic_delete_grace_s
        while time.monotonic() < deadline:
            try:
                futures = self._admin.describe_consumer_groups([group_id], request_timeout=5)
                desc = futures[group_id].result(timeout=5)
            except Exception:  # noqa: BLE001 - cannot tell (old broker, no such group): don't block delete
                return
            held = any(tp.topic == topic for m in desc.members
                       for tp in (m.assignment.topic_partitions if m.assignment else ()))
            # Mid-rebalance, members show no assignment at all: "not held" means something only
            # once the group is stable (or has no members). Deleting during a rebalance let it
            # hand out the dying topic, and faust crashed on it (seen in CI).
            settled = desc.state in (ConsumerGroupState.STABLE, ConsumerGroupState.EMPTY,
                                     ConsumerGroupState.DEAD)
            if settled and not held:
                return
            time.sleep(0.1)

    def _write(self, name: str, group: FeatureGroup | None) -> None:
        self._ensure_ready()
        assert self._producer is not None
        value = None if group is None else orjson.dumps(group.to_dict())
        errors: list[KafkaError] = []

        def on_delivery(err: KafkaError | None, _msg: object) -> None:
            if err is not None:
                errors.append(err)

        self._producer.produce(self.topic, key=name.encode(), value=value, on_delivery=on_delivery)
        remaining = self._producer.flush(self.timeout_s)
        if remaining or errors:
            reason = errors[0] if errors else "timed out"
            raise ServiceUnavailableError(f"could not write feature group {name!r} to the registry topic "
                                          f"{self.topic!r}: {reason}")


class _Keep:
    """Sentinel base."""


class _ClearTtl(_Keep):
    """Sentinel: remove the group's TTL."""


Registry.CLEAR_TTL = _ClearTtl


def _replace(group: FeatureGroup, **changes: object) -> FeatureGroup:
    from dataclasses import replace

    return replace(group, **changes)


def _topic_config(group: FeatureGroup) -> dict[str, str]:
    return {
        "cleanup.policy": "delete",
        # -1 (default) keeps every record: the topic is the source of truth that rebuilds
        # the online and offline views, so they can only be rebuilt from what is retained.
        "retention.ms": str(group.retention_ms),
        # Event time is in the payload. The broker stamps each message when it appends it: that
        # time follows offset order within a partition, so it is the offline store's
        # api_invocation_time (the SPEC's tie-break then agrees with schemas/ordering.py), and
        # it is what `tail --from` and `replay --from` seek on.
        "message.timestamp.type": "LogAppendTime",
    }
