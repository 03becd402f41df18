"""The file system under the offline store: open it from a URI, write objects atomically.

Everything else in sinks/offline goes through the fsspec object returned here, so the same
code runs on S3 (s3fs) and on a local directory (tests, single machine).
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

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
        opts.setdefault("auto_mkdir", True)
    try:
        fs = fsspec.filesystem(protocol, **opts)
    except (TypeError, ValueError, ImportError) as exc:
        raise OfflineLayoutError(f"cannot open offline store {uri!r} with options "
                                 f"{sorted(opts)}: {exc}") from exc
    root = fs._strip_protocol(uri).rstrip("/")
    if protocol == "file":
        root = os.path.abspath(root)
    return fs, root


def is_local(fs: Any) -> bool:
    return isinstance(fs, LocalFileSystem)


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


def write_atomic(fs: Any, path: str, data: bytes) -> None:
    """Make ``path`` hold ``data`` all at once: a reader sees the old object, or all of the new one.

    S3: one PUT (or one completed multipart upload) is atomic by the S3 contract. Local: write
    a hidden temp file in the same directory (readers skip names starting with '.'), fsync,
    then os.replace, which is atomic within one file system.
    """
    with storage_errors("write", path):
        if is_local(fs):
            directory, name = os.path.split(path)
            os.makedirs(directory, exist_ok=True)
            tmp = os.path.join(directory, f".tmp-{uuid.uuid4().hex}-{name}")
            try:
                with open(tmp, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, path)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        else:
            fs.pipe_file(path, data)
            fs.invalidate_cache(path.rsplit("/", 1)[0])


def read_bytes(fs: Any, path: str) -> bytes:
    with storage_errors("read", path):
        return fs.cat_file(path)


def delete_quietly_missing(fs: Any, paths: list[str]) -> None:
    """Delete ``paths``; ones already gone are fine (a retried step after a crash)."""
    for p in paths:
        with storage_errors("delete", p):
            try:
                fs.rm_file(p)
            except FileNotFoundError:
                pass
    if paths and not is_local(fs):
        fs.invalidate_cache()


def find_files(fs: Any, root: str) -> list[str]:
    """Every file under ``root`` (fresh listing, never a cached one)."""
    with storage_errors("list", root):
        fs.invalidate_cache()
        try:
            return sorted(fs.find(root))
        except FileNotFoundError:
            return []
