"""A throwaway PostgreSQL server for tests: Debian's postgresql binaries, initdb + pg_ctl, loopback.

Used by the shared-catalog tests (an Iceberg SQL catalog in Postgres, as sinks on several hosts
use). ``make setup`` installs the binaries with apt when it runs as root, as it does redis-server.
initdb refuses to run as root, so as root the server runs as the ``postgres`` system user.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from featurestream.stack.ports import free_port
from tests.support.wait import wait_for


def postgres_bin(name: str) -> str | None:
    """Path of a PostgreSQL server binary (PATH first, then Debian's versioned directory)."""
    found = shutil.which(name)
    if found:
        return found
    versions = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return versions[-1] if versions else None


def _as_server_user(argv: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *argv]
    return argv


@contextmanager
def running_postgres() -> Iterator[str]:
    """Start a server on a free loopback port; yield its SQLAlchemy URL; stop it (and its files)."""
    initdb, pg_ctl = postgres_bin("initdb"), postgres_bin("pg_ctl")
    if not initdb or not pg_ctl:
        raise FileNotFoundError("PostgreSQL's initdb/pg_ctl are not installed (make setup installs Debian's "
                                "postgresql as root)")
    root = Path(tempfile.mkdtemp(prefix="fs-pg-"))
    data, sock = root / "data", root / "sock"
    sock.mkdir()
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        shutil.chown(sock, "postgres")
    port = free_port()
    subprocess.run(_as_server_user([initdb, "-D", str(data), "-U", "fs", "--auth=trust", "-E", "UTF8"]),
                   check=True, capture_output=True, timeout=120)
    subprocess.run(_as_server_user([pg_ctl, "-D", str(data), "-l", str(root / "server.log"), "-w", "-t", "60",
                                    "-o", f"-p {port} -h 127.0.0.1 -k {sock}", "start"]),
                   check=True, capture_output=True, timeout=120)
    url = f"postgresql+psycopg2://fs@127.0.0.1:{port}/postgres"
    try:
        import psycopg2

        def answers() -> bool:
            try:
                psycopg2.connect(host="127.0.0.1", port=port, user="fs", dbname="postgres").close()
                return True
            except psycopg2.OperationalError:
                return False

        wait_for(answers, timeout_s=60, interval_s=0.2, what=f"PostgreSQL on 127.0.0.1:{port}")
        yield url
    finally:
        subprocess.run(_as_server_user([pg_ctl, "-D", str(data), "-m", "immediate", "stop"]),
                       capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)
