"""A real S3-compatible server over HTTP for the offline store.

Preference: ``minio`` on PATH (the reference S3 clone); else versitygw, a single Go binary
built once from source with ``go install`` (no prebuilt download needed) serving a plain
directory; else moto's server mode, which is S3-faithful enough but keeps objects in memory.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from featurestream.stack.errors import ToolMissingError
from featurestream.stack.gobuild import go_install

VERSITYGW_MODULE = "github.com/versity/versitygw/cmd/versitygw"
VERSITYGW_VERSION = "v1.8.0"
LOCAL_ACCESS_KEY = "featurestream"
LOCAL_SECRET_KEY = "featurestream-local-secret"  # a local dev server on loopback, not a secret
MINIO_DEFAULT_KEYS = ("minioadmin", "minioadmin")  # minio's own defaults: no env vars to pass


@dataclass(frozen=True)
class S3Server:
    kind: str  # "minio", "versitygw" or "moto"
    binary: str

    def argv(self, port: int, data_dir: Path) -> list[str]:
        address = f"127.0.0.1:{port}"
        if self.kind == "minio":
            return [self.binary, "server", str(data_dir / "objects"), "--address", address,
                    "--console-address", f"127.0.0.1:{port + 1}", "--quiet"]
        if self.kind == "versitygw":
            # --sidecar keeps object metadata in files, so no extended-attribute support is
            # needed from the filesystem (overlayfs and tmpfs often lack user xattrs).
            return [self.binary, "--port", address, "--access", LOCAL_ACCESS_KEY, "--secret",
                    LOCAL_SECRET_KEY, "--quiet", "posix", "--sidecar", str(data_dir / "meta"),
                    str(data_dir / "objects")]
        return [self.binary, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]

    def keys(self) -> tuple[str, str]:
        if self.kind == "minio":
            return MINIO_DEFAULT_KEYS
        return LOCAL_ACCESS_KEY, LOCAL_SECRET_KEY

    def prepare(self, data_dir: Path) -> None:
        for sub in ("objects", "meta"):
            (data_dir / sub).mkdir(parents=True, exist_ok=True)


def build_versitygw(bin_dir: Path, *, search_path: str | None = None, log_path: Path | None = None) -> str | None:
    """Build versitygw into ``bin_dir`` unless present; its path, or None without a Go toolchain."""
    return go_install("s3", VERSITYGW_MODULE, VERSITYGW_VERSION, "versitygw", bin_dir,
                      search_path=search_path, log_path=log_path)


def find_s3_server(bin_dir: Path, *, search_path: str | None = None, build: bool = True) -> S3Server:
    """The best S3 server available, building versitygw when Go is there and nothing else is."""
    minio = shutil.which("minio", path=search_path)
    if minio:
        return S3Server("minio", minio)
    cached = bin_dir / "versitygw"
    if cached.is_file():
        return S3Server("versitygw", str(cached))
    on_path = shutil.which("versitygw", path=search_path)
    if on_path:
        return S3Server("versitygw", on_path)
    if build:
        built = build_versitygw(bin_dir, search_path=search_path)
        if built:
            return S3Server("versitygw", built)
    if importlib.util.find_spec("moto") is not None and importlib.util.find_spec("flask") is not None:
        return S3Server("moto", sys.executable)
    raise ToolMissingError(
        "s3: no S3 server found: install `minio`, or a Go toolchain (to build versitygw), or "
        "`pip install 'featurestream[s3server]'` (moto), or set FEATURESTREAM_S3_ENDPOINT_URL "
        "to an existing S3 endpoint."
    )


def s3_filesystem(endpoint_url: str, key: str | None, secret: str | None):  # -> s3fs.S3FileSystem
    import s3fs

    # A fresh instance, not s3fs's cached one: readiness probes must really ask the server.
    return s3fs.S3FileSystem(key=key, secret=secret, client_kwargs={"endpoint_url": endpoint_url},
                             skip_instance_cache=True, use_listings_cache=False)


def s3_answers(endpoint_url: str, key: str | None, secret: str | None) -> bool:
    """True when the server lists its buckets with these credentials."""
    try:
        s3_filesystem(endpoint_url, key, secret).ls("", refresh=True)
    except Exception:  # noqa: BLE001 - any failure means "does not answer (yet)"
        return False
    return True


def ensure_bucket(endpoint_url: str, key: str, secret: str, bucket: str) -> None:
    fs = s3_filesystem(endpoint_url, key, secret)
    if not fs.exists(bucket):
        fs.mkdir(bucket)


def bucket_of(uri: str) -> str:
    """``s3://bucket/prefix`` → ``bucket``."""
    if not uri.startswith("s3://") or not uri[5:].split("/", 1)[0]:
        raise ValueError(f"offline store URI must look like s3://bucket/prefix, got {uri!r}")
    return uri[5:].split("/", 1)[0]
