"""Kafka administration: broker readiness, topic creation and deletion.

Thin wrappers over confluent-kafka's AdminClient that turn its futures and error codes into
featurestream's typed errors, always with a deadline (a broker that is down must give a
clear error, never a hang).
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from schemas.errors import ServiceUnavailableError
from streams.contact import has_answered, mark_answered
from streams.kafka_client import KafkaTarget, confluent_conf, connection


class KafkaAuthenticationError(ServiceUnavailableError):
    """The broker refused this client's SASL credentials (retrying would not help)."""


class BrokerErrors:
    """librdkafka's ``error_cb``: keeps the last connection-level error. It says why a broker does not
    answer (credentials refused, a TLS handshake that failed) better than the timeout that follows
    it. (Plaintext spoken to a TLS listener gets no reason from librdkafka: just "brokers are down".)"""

    def __init__(self) -> None:
        self.last: str | None = None
        self.authentication: KafkaError | None = None

    def __call__(self, err: KafkaError) -> None:
        if err.code() == KafkaError._AUTHENTICATION:
            self.authentication = err
        # "1/1 brokers are down" follows every failed connection and would hide the reason for it
        if err.code() != KafkaError._ALL_BROKERS_DOWN or self.last is None:
            self.last = err.str()


def admin_client(bootstrap: KafkaTarget, *, timeout_s: float = 10.0,
                 error_cb: BrokerErrors | None = None) -> AdminClient:
    """An AdminClient whose socket-level waits are bounded by ``timeout_s``."""
    conf = confluent_conf(bootstrap, {
        "socket.timeout.ms": int(timeout_s * 1000),
        # Without this librdkafka logs connection refusals forever to stderr when a broker
        # is down; the caller already gets a typed error.
        "log_level": 0,
    })
    if error_cb is not None:
        conf["error_cb"] = error_cb
    return AdminClient(conf)


def wait_for_broker(bootstrap: KafkaTarget, *, timeout_s: float = 10.0) -> None:
    """Return once a metadata request answers, or raise ServiceUnavailableError
    (KafkaAuthenticationError, at once, when the broker refuses the credentials)."""
    errors = BrokerErrors()
    admin = admin_client(bootstrap, timeout_s=timeout_s, error_cb=errors)
    security = connection(bootstrap).security.describe()
    deadline = time.monotonic() + timeout_s
    last: object = None
    while time.monotonic() < deadline:
        try:
            admin.list_topics(timeout=max(0.5, min(2.0, deadline - time.monotonic())))
            mark_answered(bootstrap)
            return
        except KafkaException as exc:
            last = exc
        admin.poll(0)  # serves error_cb
        if errors.authentication is not None:
            raise KafkaAuthenticationError(
                f"Kafka at {bootstrap} refused this client's credentials ({security}): authentication failed: "
                f"{errors.authentication.str()}. Check the SASL mechanism, username and password.")
    if errors.last is not None:
        last = errors.last
    raise ServiceUnavailableError(
        f"Kafka at {bootstrap} ({security}) did not answer a metadata request within {timeout_s:g} s "
        f"({last}); {_since(bootstrap)}. Is the broker running, and does it speak this security protocol? "
        "(`featurestream status`)"
    )


def _since(bootstrap: KafkaTarget) -> str:
    return ("it answered this process before, so it went away" if has_answered(bootstrap)
            else "it has not answered since this process started")


def topic_exists(admin: AdminClient, topic: str, *, timeout_s: float = 10.0,
                 bootstrap: KafkaTarget | None = None) -> bool:
    """Whether ``topic`` exists; waits up to ``timeout_s`` for the broker (``bootstrap`` names it in
    errors and in the process's memory of brokers that answered, streams.contact)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            # Short attempts in a loop: one long metadata call can miss a broker that came back.
            md = admin.list_topics(topic=topic, timeout=max(0.5, min(5.0, deadline - time.monotonic())))
            break
        except KafkaException as exc:
            if time.monotonic() >= deadline:
                where = f"at {bootstrap} " if bootstrap else ""
                since = f"; {_since(bootstrap)}" if bootstrap else ""
                raise ServiceUnavailableError(f"Kafka {where}did not answer a metadata request for topic {topic!r} "
                                              f"within {timeout_s:g} s: {exc}{since}") from exc
    if bootstrap:
        mark_answered(bootstrap)
    tmd = md.topics.get(topic)
    return tmd is not None and tmd.error is None


def ensure_topic(admin: AdminClient, topic: str, *, partitions: int, replication_factor: int,
                 config: Mapping[str, str] | None = None, timeout_s: float = 30.0) -> bool:
    """Create ``topic`` if missing; True if this call created it. Waits until it is visible."""
    new = NewTopic(topic, num_partitions=partitions, replication_factor=replication_factor,
                   config=dict(config or {}))
    futures = admin.create_topics([new], request_timeout=timeout_s, operation_timeout=timeout_s)
    created = True
    try:
        futures[topic].result(timeout=timeout_s)
    except KafkaException as exc:
        err = exc.args[0] if exc.args else None
        if isinstance(err, KafkaError) and err.code() == KafkaError.TOPIC_ALREADY_EXISTS:
            created = False
        else:
            raise ServiceUnavailableError(f"could not create Kafka topic {topic!r}: {exc}") from exc
    except TimeoutError as exc:
        raise ServiceUnavailableError(f"Kafka did not create topic {topic!r} within {timeout_s:.0f} s; "
                                      "is the broker running?") from exc
    _wait_visible(admin, topic, timeout_s)
    return created


def _wait_visible(admin: AdminClient, topic: str, timeout_s: float) -> None:
    # CreateTopics returns before every partition has a leader; producing right away can
    # fail with UNKNOWN_TOPIC_OR_PART, so wait until metadata shows leaders everywhere.
    deadline = time.monotonic() + timeout_s
    while True:
        md = admin.list_topics(topic=topic, timeout=timeout_s)
        tmd = md.topics.get(topic)
        if tmd is not None and tmd.error is None and tmd.partitions and all(
            p.leader >= 0 for p in tmd.partitions.values()
        ):
            return
        if time.monotonic() > deadline:
            raise ServiceUnavailableError(f"topic {topic!r} was created but has no leader after "
                                          f"{timeout_s:.0f} s")
        time.sleep(0.05)


def delete_topic(admin: AdminClient, topic: str, *, timeout_s: float = 30.0) -> bool:
    """Delete ``topic``; False if it did not exist."""
    futures = admin.delete_topics([topic], request_timeout=timeout_s, operation_timeout=timeout_s)
    try:
        futures[topic].result(timeout=timeout_s)
    except KafkaException as exc:
        err = exc.args[0] if exc.args else None
        if isinstance(err, KafkaError) and err.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
            return False
        raise ServiceUnavailableError(f"could not delete Kafka topic {topic!r}: {exc}") from exc
    return True
