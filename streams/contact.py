"""How long to wait for a Kafka broker: a short first contact, then the delivery timeout.

A broker that has never answered this process is most likely a wrong address or a stack that
is not running, and the caller should hear so within seconds. A broker that answered before and
is now away is most likely restarting (a crash, a rolling upgrade, `featurestream up` after a
kill): publishing and registry reads wait for it up to the delivery timeout, as Kafka's own
clients do (``delivery.timeout.ms``, 120 s by default).

The memory of which brokers answered is per process, so every client in it (the publisher,
the registry) agrees.
"""

from __future__ import annotations

import threading

from streams.kafka_client import KafkaConnection, KafkaTarget, connection

# Kafka's Java producer default for delivery.timeout.ms; featurestream.config's default too.
DEFAULT_DELIVERY_TIMEOUT_S = 120.0
# Long enough for a loaded machine to answer a metadata request, short enough to be "at once"
# for someone who typed a wrong address.
FIRST_CONTACT_TIMEOUT_S = 5.0

_answered: set[KafkaConnection] = set()
_lock = threading.Lock()


def mark_answered(bootstrap: KafkaTarget) -> None:
    """Remember that the broker(s) at ``bootstrap`` answered this process."""
    with _lock:
        # by address and security settings: the same brokers with another login or protocol have not answered
        _answered.add(connection(bootstrap))


def has_answered(bootstrap: KafkaTarget) -> bool:
    with _lock:
        return connection(bootstrap) in _answered


def wait_budget(bootstrap: KafkaTarget, delivery_timeout_s: float) -> float:
    """How long a call may wait for ``bootstrap``: the delivery timeout once it has answered
    this process, else the short first-contact timeout (never more than the delivery timeout)."""
    if has_answered(bootstrap):
        return delivery_timeout_s
    return min(FIRST_CONTACT_TIMEOUT_S, delivery_timeout_s)
