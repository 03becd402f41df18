"""Which member of a consumer group holds which partitions (Kafka's DescribeConsumerGroups).

``featurestream status`` shows it for ``<prefix>-online`` and ``<prefix>-offline``: each member's
client id (for featurestream's workers, role, host and pid: streams/client_id.py), the address
the broker sees it connect from, its member id, and the (topic, partition)s assigned to it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from confluent_kafka import KafkaException

from schemas.errors import ServiceUnavailableError
from streams.admin import admin_client
from streams.kafka_client import KafkaTarget

TP = tuple[str, int]


@dataclass(frozen=True)
class GroupMember:
    member_id: str
    client_id: str
    host: str                   # as the broker saw the connection, e.g. "127.0.0.1"
    instance_id: str | None     # static membership (the sink's --instance-id)
    partitions: tuple[TP, ...]  # sorted


@dataclass(frozen=True)
class GroupAssignment:
    group_id: str
    state: str                  # "stable", "preparing_rebalance", "empty", "dead" (no such group) ...
    members: tuple[GroupMember, ...]

    def held(self) -> set[TP]:
        return {tp for m in self.members for tp in m.partitions}


def describe_groups(bootstrap: KafkaTarget, group_ids: Iterable[str], *, timeout_s: float = 10.0,
                    ) -> dict[str, GroupAssignment]:
    """The members of each consumer group and the partitions each holds (a group that does not exist
    comes back with no members). Mid-rebalance, members hold nothing until it settles."""
    group_ids = list(group_ids)
    if not group_ids:
        return {}
    admin = admin_client(bootstrap, timeout_s=timeout_s)
    futures = admin.describe_consumer_groups(group_ids, request_timeout=timeout_s)
    out: dict[str, GroupAssignment] = {}
    for group_id in group_ids:
        try:
            desc = futures[group_id].result(timeout=timeout_s)
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            if getattr(err, "name", lambda: "")() == "GROUP_ID_NOT_FOUND":
                out[group_id] = GroupAssignment(group_id, "dead", ())
                continue
            raise ServiceUnavailableError(f"Kafka at {bootstrap} did not describe consumer group {group_id!r}: "
                                          f"{exc}") from exc
        except TimeoutError as exc:
            raise ServiceUnavailableError(f"Kafka at {bootstrap} did not describe consumer group {group_id!r} "
                                          f"within {timeout_s:g} s") from exc
        members = tuple(sorted(
            (GroupMember(m.member_id, m.client_id, m.host.lstrip("/"), m.group_instance_id,
                         tuple(sorted((tp.topic, tp.partition)
                                      for tp in (m.assignment.topic_partitions if m.assignment else ()))))
             for m in desc.members),
            key=lambda m: (m.client_id, m.member_id)))
        state = desc.state.name.lower() if hasattr(desc.state, "name") else str(desc.state).lower()
        out[group_id] = GroupAssignment(group_id, state, members)
    return out
