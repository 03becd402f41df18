"""Which exceptions the CLI prints as one clear line instead of a traceback."""

from __future__ import annotations

from featurestream.config import ConfigError


def describe_error(exc: BaseException) -> str | None:
    """A one-line message for an expected error, or None to let the traceback show."""
    # Our typed errors (schemas.errors.FeatureStoreError and subclasses) carry messages
    # naming the group, the feature, the value and what would be valid.
    try:
        from schemas.errors import FeatureStoreError
    except ImportError:  # pragma: no cover - schemas is part of this distribution
        FeatureStoreError = ()  # type: ignore[assignment]  # noqa: N806
    if isinstance(exc, ConfigError | FeatureStoreError):
        return str(exc)
    if isinstance(exc, FileNotFoundError | PermissionError | IsADirectoryError):
        return str(exc)
    return None
