"""server.properties rendering and KRaft cluster ids."""

from __future__ import annotations

import base64
import math
from pathlib import Path

import pytest

from featurestream.stack.kafka import new_cluster_id, render_server_properties


def parse(text: str) -> dict[str, str]:
    pairs = [line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#")]
    return {k: v for k, v in pairs}


def test_single_node_kraft_on_loopback_only() -> None:
    props = parse(render_server_properties(19092, 19093, Path("/s/kafka/log")))
    assert props["process.roles"] == "broker,controller"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:19093"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:19092"
    assert props["log.dirs"] == "/s/kafka/log"
    assert "0.0.0.0" not in render_server_properties(19092, 19093, Path("/x"))


def test_internal_topics_fit_one_broker_and_topics_are_explicit() -> None:
    props = parse(render_server_properties(1, 2, Path("/x")))
    for key in ("offsets.topic.replication.factor", "transaction.state.log.replication.factor",
                "transaction.state.log.min.isr", "share.coordinator.state.topic.replication.factor",
                "share.coordinator.state.topic.min.isr"):
        assert props[key] == "1", key
    assert props["group.initial.rebalance.delay.ms"] == "0"
    assert props["auto.create.topics.enable"] == "false"


@pytest.mark.parametrize("kafka_port, controller_port", [
    (0, 19093), (19092, 70000), (-1, 2), ("19092", 19093), (19092.0, 19093), (math.nan, 1),
    (True, 19093), (None, 19093), (19092, 19092),
])
def test_bad_ports_are_rejected_with_the_value(kafka_port: object, controller_port: object) -> None:
    with pytest.raises(ValueError, match="port"):
        render_server_properties(kafka_port, controller_port, Path("/x"))  # type: ignore[arg-type]


def test_cluster_id_is_a_kafka_uuid() -> None:
    ids = {new_cluster_id() for _ in range(200)}
    assert len(ids) == 200
    for cid in ids:
        assert len(cid) == 22 and not cid.startswith("-")
        assert len(base64.urlsafe_b64decode(cid + "==")) == 16
