"""Errors of the online store beyond the shared ones in ``schemas.errors``."""

from __future__ import annotations

from schemas.errors import FeatureStoreError


class CorruptRecordError(FeatureStoreError, ValueError):
    """A stored online record is not in featurestream's layout (someone else wrote the key)."""

    def __init__(self, message: str, *, group: str, record_id: str, feature: str | None = None,
                 value: object = None) -> None:
        super().__init__(message)
        self.group = group
        self.record_id = record_id
        self.feature = feature
        self.value = value


class RedisUrlError(FeatureStoreError, ValueError):
    """A Redis URL that cannot be used (wrong scheme, no host, bad port)."""
