"""The dead-letter topic: poison messages are copied there with the reason, and counted.

The stream keeps flowing: a message that cannot be applied is parked with its original
key, value and headers plus ``fs-dlq-*`` headers saying why and where it came from.
"""

from __future__ import annotations

from collections.abc import Sequence

from schemas.names import deadletter_topic
from streams.admin import admin_client, ensure_topic
from streams.publisher import Publisher
from streams.route import Poison


class DeadLetters:
    def __init__(self, publisher: Publisher, prefix: str, stage: str) -> None:
        self.publisher = publisher
        self.topic = deadletter_topic(prefix)
        self.stage = stage
        self.count = 0
        ensure_topic(admin_client(publisher.bootstrap), self.topic, partitions=1, replication_factor=1,
                     config={"cleanup.policy": "delete"})

    def send(self, poison: Sequence[Poison]) -> None:
        """Publish every poison message and wait for the broker (before the batch is acknowledged)."""
        if not poison:
            return
        records = []
        for p in poison:
            headers = list(p.raw.headers or [])
            headers += [
                ("fs-dlq-reason", p.reason.encode("utf-8", "replace")[:8000]),
                ("fs-dlq-source-topic", p.raw.topic.encode()),
                ("fs-dlq-source-partition", str(p.raw.partition).encode()),
                ("fs-dlq-source-offset", str(p.raw.offset).encode()),
                ("fs-dlq-stage", self.stage.encode()),
            ]
            records.append((p.raw.key, p.raw.value if p.raw.value is not None else b"", headers))
        batch = self.publisher.publish_many(self.topic, records)
        batch.wait(self.publisher)
        self.count += len(poison)
