"""The file system under the offline store, for what pyiceberg's FileIO does not do: listing a
table's location with modification times (orphan removal) and deleting a purged group's files.

The same code runs on S3 (s3fs) and on a local directory (tests, single machine); errors become
one typed error naming what failed and where.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import fsspec

from sinks.offline.errors import OfflineLayoutError, OfflineStorageError


def _storage_exceptions() -> tuple[type[BaseException], ...]:
    excs: list[type[BaseException]] = [OSError, TimeoutError, ConnectionError]
    try:  # botocore is only there with s3fs; its connection errors are not OSErrors
        from botocore.exceptions import BotoCoreError, ClientError

        excs += [BotoCoreError, ClientError]
    except ImportError:  # pragma: no cover - local-only installs
        pass
    return tuple(excs)


STORAGE_EXCEPTIONS = _storage_exceptions()


def open_filesystem(uri: str, storage_options: dict[str, Any] | None = None) -> tuple[Any, str]:
    """Return ``(fs, root_path)`` for ``s3://bucket/prefix`` or a local path / ``file://`` URI.

    ``root_path`` is in the fs's own form (no protocol), ready for ``fs.open``/``fs.find``.
    """
    if not isinstance(uri, str) or not uri.strip():
        raise OfflineLayoutError(f"offline store URI must be a non-empty string like s3://bucket/prefix "
                                 f"or /var/lib/featurestream/offline; got {uri!r}")
    if storage_options is not None and not isinstance(storage_options, dict):
        raise OfflineLayoutError(f"storage_options for {uri!r} must be a dict (Config.storage_options()); "
                                 f"got {type(storage_options).__name__} {storage_options!r:.100}")
    opts = dict(storage_options or {})
    if uri.startswith("s3://") or uri.startswith("s3a://"):
        if len(uri.split("://", 1)[1].strip("/")) == 0:
            raise OfflineLayoutError(f"offline store URI {uri!r} names no bucket; use s3://bucket/prefix")
        protocol = "s3"
    elif "://" in uri and not uri.startswith("file://"):
        raise OfflineLayoutError(f"offline store URI {uri!r} has an unsupported scheme; use s3://bucket/"
                                 "prefix or a local path")
    else:
        protocol = "file"
        opts = {"auto_mkdir": True}  # S3 options (given for the catalog's other tables) mean nothing here
    try:
        fs = fsspec.filesystem(protocol, **opts)
    except (TypeError, ValueError, ImportError) as exc:
        raise OfflineLayoutError(f"cannot open offline store {uri!r} with options "
                                 f"{sorted(opts)}: {exc}") from exc
    root = fs._strip_protocol(uri).rstrip("/")
    if protocol == "file":
        root = os.path.abspath(root)
    return fs, root


@contextlib.contextmanager
def storage_errors(action: str, path: str) -> Iterator[None]:
    """Turn the file system's assorted exceptions into one typed error naming what and where."""
    try:
        yield
    except FileNotFoundError:
        raise
    except STORAGE_EXCEPTIONS as exc:
        raise OfflineStorageError(f"offline store: cannot {action} {path!r}: {type(exc).__name__}: {exc} "
                                  "(is the S3 server up and FEATURESTREAM_S3_ENDPOINT_URL right?)") from exc
