"""`featurestream status`: workers' client ids, and the per-member partition view (pure formatting)."""

from __future__ import annotations

import pytest

from featurestream.cli.assignments import format_assignments, member_label
from streams.client_id import WorkerClientId, parse_worker_client_id, worker_client_id
from streams.group_members import GroupAssignment, GroupMember

T = "fs.customers"


def test_client_id_names_role_host_and_pid_and_reads_back():
    cid = worker_client_id("processor", host="pod-a-7f9c-2", pid=4242)
    assert cid == "featurestream-processor-pod-a-7f9c-2-4242"
    assert parse_worker_client_id(cid) == WorkerClientId("processor", "pod-a-7f9c-2", 4242)
    assert parse_worker_client_id(worker_client_id("sink", host="h", pid=1)) == WorkerClientId("sink", "h", 1)


def test_client_id_of_this_process_uses_its_host_and_pid():
    import os
    import socket

    parsed = parse_worker_client_id(worker_client_id("sink"))
    assert parsed == WorkerClientId("sink", socket.gethostname(), os.getpid())


@pytest.mark.parametrize("cid", ["", "faust-0.15.3", "rdkafka", "featurestream-", "featurestream-replay-h-1",
                                 "featurestream-processor-h-x1", "featurestream-processor--12",
                                 "featurestream-processor-12", "featurestream-sink-host-"])
def test_other_client_ids_are_not_mistaken_for_workers(cid):
    assert parse_worker_client_id(cid) is None


@pytest.mark.parametrize("role", ["api", "", "Processor", None])
def test_an_unknown_role_is_refused_by_name(role):
    with pytest.raises(ValueError, match="role must be one of processor, sink"):
        worker_client_id(role, host="h", pid=1)  # type: ignore[arg-type]


def _member(pid: int, parts: tuple, *, cid: str | None = None, instance: str | None = None) -> GroupMember:
    cid = cid or worker_client_id("processor", host="node1", pid=pid)
    return GroupMember(f"{cid}-uuid{pid}", cid, "127.0.0.1", instance, parts)


def test_each_member_is_listed_with_its_partitions_and_their_lag():
    group = GroupAssignment("fs-online", "stable", (
        _member(11, ((T, 0), (T, 1), (T, 2))),
        _member(12, ((T, 3), (T, 4), (T, 5), ("fs.orders", 0))),
    ))
    lag = {(T, p): p * 10 for p in range(6)}
    lines = format_assignments(group, lag, {T: "customers"}, {(T, p) for p in range(6)} | {("fs.orders", 0)})
    assert lines == [
        "consumer group fs-online (stable, 2 members)",
        "  processor pid 11 on node1 from 127.0.0.1: member featurestream-processor-node1-11-uuid11",
        "    customers: partitions 0 (lag 0), 1 (lag 10), 2 (lag 20)",
        "  processor pid 12 on node1 from 127.0.0.1: member featurestream-processor-node1-12-uuid12",
        "    customers: partitions 3 (lag 30), 4 (lag 40), 5 (lag 50)",
        "    fs.orders: partitions 0",  # no feature-group name known, no lag known: shown as they are
    ]


def test_partitions_nobody_holds_are_listed_with_why():
    group = GroupAssignment("fs-offline", "preparing_rebalance", (_member(7, ()),))
    lines = format_assignments(group, {(T, 0): 1_234}, {T: "customers"}, {(T, 0), (T, 1)})
    assert lines == [
        "consumer group fs-offline (preparing rebalance, 1 member)",
        "  processor pid 7 on node1 from 127.0.0.1: member featurestream-processor-node1-7-uuid7",
        "    no partitions",
        "  customers: partitions 0 (lag 1,234), 1 unassigned (rebalancing)",
    ]
    empty = format_assignments(GroupAssignment("fs-offline", "dead", ()), {}, {}, {(T, 0)})
    assert empty == ["consumer group fs-offline (dead, 0 members)",
                     "  fs.customers: partitions 0 unassigned (no member holds them)"]


def test_a_foreign_client_and_a_static_member_are_labelled_as_such():
    assert member_label(_member(1, (), cid="kafka-console-consumer")) == "client kafka-console-consumer from 127.0.0.1"
    sink = _member(3, (), cid=worker_client_id("sink", host="pod-b", pid=3), instance="sink-0")
    assert member_label(sink) == "sink pid 3 on pod-b from 127.0.0.1, instance id sink-0"
