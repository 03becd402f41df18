"""Typed errors of the offline writer, tables and maintenance.

They subclass schemas.errors so the CLI/HTTP front doors already know how to show them.
"""

from __future__ import annotations

from schemas.errors import FeatureStoreError, RecordValidationError, ServiceUnavailableError


class OfflineRowError(RecordValidationError):
    """A message cannot become an offline row (wrong type, NaN, out-of-range value, unknown feature).

    Carries the Kafka coordinates so the sink can dead-letter exactly that message.
    """

    def __init__(self, message: str, *, group: str | None = None, feature: str | None = None,
                 value: object = None, topic: str | None = None, partition: int | None = None,
                 offset: int | None = None) -> None:
        super().__init__(message, group=group, feature=feature, value=value)
        self.topic = topic
        self.partition = partition
        self.offset = offset


class OfflineStorageError(ServiceUnavailableError):
    """The file system under the offline store (S3 or a local path) failed or did not answer."""


class OfflineLayoutError(FeatureStoreError, ValueError):
    """A URI, an argument or a Kafka offset does not fit the offline table (wrong type, wrong order)."""


class OffsetsMismatchError(FeatureStoreError):
    """A commit was refused: its start offsets are not what the table records (see table_commit.py).

    ``recorded`` maps each disagreeing (topic, partition) to what the table records (None:
    nothing); the writer resumes from there.
    """

    def __init__(self, message: str, *, recorded: dict[tuple[str, int], int | None]) -> None:
        super().__init__(message)
        self.recorded = recorded


class StaleGroupError(FeatureStoreError):
    """A writer holds rows of a life of a group that the registry no longer has (deleted, or deleted
    and created again), and that life's table is gone: nothing is created for them. The sink rewinds,
    and the records, read again, go where a deleted group's records go (the dead-letter topic)."""

    def __init__(self, message: str, *, group: str) -> None:
        super().__init__(message)
        self.group = group
