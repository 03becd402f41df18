"""Port checks: is a loopback port free, which process holds it, and a free one for tests."""

from __future__ import annotations

import errno
import os
import socket
from pathlib import Path

LOOPBACK = "127.0.0.1"
_LISTEN = "0A"  # TCP_LISTEN in /proc/net/tcp's hex state column


def port_is_free(port: int, host: str = LOOPBACK) -> bool:
    """True when nothing listens on ``host:port`` and we could bind it ourselves.

    Binding (not connecting) is the real question a server will ask; SO_REUSEADDR keeps
    TIME_WAIT leftovers of a server we just stopped from counting as "taken".
    """
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        raise ValueError(f"port must be an integer in 1..65535, got {port!r}")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def free_port(host: str = LOOPBACK) -> int:
    """A port the kernel considers free right now (tests use it to avoid fixed ports)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def answers(port: int, host: str = LOOPBACK, timeout: float = 0.5) -> bool:
    """True when a TCP connection to ``host:port`` is accepted."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def listening_inodes(port: int, proc_net: Path = Path("/proc/net")) -> set[str]:
    """Socket inodes listening on ``port`` (any address), read from /proc/net/tcp{,6}."""
    inodes: set[str] = set()
    for name in ("tcp", "tcp6"):
        try:
            lines = (proc_net / name).read_text().splitlines()[1:]
        except OSError:
            continue
        inodes.update(parse_listeners(lines, port))
    return inodes


def parse_listeners(lines: list[str], port: int) -> set[str]:
    """Pure part of :func:`listening_inodes`: rows of /proc/net/tcp listening on ``port``."""
    found: set[str] = set()
    for line in lines:
        cols = line.split()
        if len(cols) < 10 or ":" not in cols[1]:
            continue
        local_port = int(cols[1].rsplit(":", 1)[1], 16)
        if local_port == port and cols[3] == _LISTEN:
            found.add(cols[9])
    return found


def port_owner(port: int, proc: Path = Path("/proc")) -> str | None:
    """``"pid N (command line)"`` of the process listening on ``port``, or None if unknown."""
    inodes = listening_inodes(port, proc / "net")
    if not inodes:
        return None
    targets = {f"socket:[{inode}]" for inode in inodes}
    for entry in proc.iterdir():
        if entry.name.isdigit() and _holds_socket(entry, targets):
            try:
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:  # it exited between the two reads
                continue
            return f"pid {entry.name} ({cmd.strip()[:160]})"
    return None


def _holds_socket(process: Path, targets: set[str]) -> bool:
    """True when one of ``process``'s fds is one of the ``targets`` sockets.

    Each fd is read on its own: a thread of the same process may close an fd between the
    listing and the readlink, and that must not hide the fds after it (CI saw exactly that).
    """
    try:
        fds = list((process / "fd").iterdir())
    except OSError:  # processes come and go, and others' fd tables are unreadable
        return False
    for fd in fds:
        try:
            if os.readlink(fd) in targets:
                return True
        except OSError:
            continue
    return False
