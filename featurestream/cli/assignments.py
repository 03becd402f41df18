"""`featurestream status`'s view of the consumer groups: which worker holds which partitions.

Pure formatting (tested without servers): the members come from streams/group_members.py, the
lag from streams/lag.py.
"""

from __future__ import annotations

from collections.abc import Mapping

from streams.client_id import parse_worker_client_id
from streams.group_members import GroupAssignment, GroupMember

TP = tuple[str, int]


def member_label(member: GroupMember) -> str:
    """``processor pid 4242 on host-a`` for a featurestream worker, else ``client <client id>``."""
    worker = parse_worker_client_id(member.client_id)
    who = f"{worker.role} pid {worker.pid} on {worker.host}" if worker else f"client {member.client_id}"
    where = f" from {member.host}" if member.host else ""
    static = f", instance id {member.instance_id}" if member.instance_id else ""
    return f"{who}{where}{static}"


def _partitions(topic: str, parts: list[int], lag: Mapping[TP, int]) -> str:
    return ", ".join(f"{p} (lag {lag[(topic, p)]:,})" if (topic, p) in lag else str(p) for p in sorted(parts))


def _by_topic(tps: list[TP] | set[TP] | tuple[TP, ...]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for topic, p in sorted(tps):
        out.setdefault(topic, []).append(p)
    return out


def format_assignments(group: GroupAssignment, lag: Mapping[TP, int], names: Mapping[str, str],
                       all_partitions: set[TP]) -> list[str]:
    """Lines for one consumer group: each member with the partitions it holds per feature group (and
    each partition's lag when known), then the partitions of ``all_partitions`` nobody holds.

    ``names`` maps topics to feature-group names (other topics are shown as they are);
    ``all_partitions`` are the partitions the group should consume (its feature groups' topics)."""
    n = len(group.members)
    lines = [f"consumer group {group.group_id} ({group.state.replace('_', ' ')}, "
             f"{n} member{'' if n == 1 else 's'})"]
    for member in group.members:
        lines.append(f"  {member_label(member)}: member {member.member_id}")
        held = _by_topic(member.partitions)
        if not held:
            lines.append("    no partitions")
        for topic, parts in held.items():
            lines.append(f"    {names.get(topic, topic)}: partitions {_partitions(topic, parts, lag)}")
    unheld = _by_topic(all_partitions - group.held())
    for topic, parts in unheld.items():
        why = "rebalancing" if "rebalance" in group.state else "no member holds them"
        lines.append(f"  {names.get(topic, topic)}: partitions {_partitions(topic, parts, lag)} unassigned ({why})")
    return lines

