"""Typed errors. Every message names the group, the feature, the value and what would be valid."""

from __future__ import annotations


class FeatureStoreError(Exception):
    """Base of every error featurestream raises on purpose."""


class ValidationError(FeatureStoreError, ValueError):
    """A feature group definition or a record breaks the contract.

    ``group``/``feature``/``value`` are set when known so callers (ingest's reject report,
    the HTTP API's ValidationException) can show them without parsing the message.
    """

    def __init__(self, message: str, *, group: str | None = None, feature: str | None = None,
                 value: object = None) -> None:
        super().__init__(message)
        self.group = group
        self.feature = feature
        self.value = value


class RecordValidationError(ValidationError):
    """One record is invalid; nothing of it is published."""


class DefinitionError(ValidationError):
    """A feature-group definition (names, types, limits, TTL) is invalid."""


class WireFormatError(FeatureStoreError, ValueError):
    """Bytes on a topic are not a featurestream message (poison message)."""


class GroupNotFoundError(FeatureStoreError, LookupError):
    """The named feature group does not exist in the registry."""

    def __init__(self, group: str) -> None:
        super().__init__(f"feature group {group!r} does not exist (see `featurestream group list`)")
        self.group = group


class GroupExistsError(FeatureStoreError):
    """Creating a group whose name is already taken."""

    def __init__(self, group: str) -> None:
        super().__init__(f"feature group {group!r} already exists (describe it with "
                         f"`featurestream group describe {group}`)")
        self.group = group


class ServiceUnavailableError(FeatureStoreError, ConnectionError):
    """Kafka, Redis or S3 did not answer within the deadline."""
