"""Starting, recognising and stopping the stack's server processes.

A pid alone is not proof of identity: pids are reused. Each started process is recorded
with its executable (/proc/PID/exe) and its kernel start time (field 22 of /proc/PID/stat);
`down` only signals a pid whose executable and start time both still match, so it never
kills a stranger that inherited the number. (The command line is kept for humans but not
compared: redis-server rewrites its own process title to "redis-server 127.0.0.1:PORT".)
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class ProcessRecord:
    """What a pid file holds about one server we started."""

    service: str
    pid: int
    argv: list[str]
    start_ticks: int
    exe: str
    log_path: str
    # Service facts `up` needs to answer the same way again (ports, endpoint, keys...).
    info: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ProcessRecord:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError(f"pid file must hold a JSON object, got {type(data).__name__}")
        try:
            return cls(
                service=str(data["service"]),
                pid=int(data["pid"]),
                argv=[str(a) for a in data["argv"]],
                start_ticks=int(data["start_ticks"]),
                exe=str(data["exe"]),
                log_path=str(data["log_path"]),
                info={str(k): str(v) for k, v in dict(data.get("info") or {}).items()},
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"pid file is missing or has a bad field: {exc}") from exc


def start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot, or None if it does not exist."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may contain spaces: split after it.
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] == "Z":  # a zombie has exited; only its parent has not reaped it yet
        return None
    return int(fields[19])


def cmdline(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [part.decode(errors="replace") for part in raw.split(b"\0")[:-1]]


def executable(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return None


def is_running(record: ProcessRecord) -> bool:
    """True when the recorded process is alive and is still the one we started."""
    ticks = start_ticks(record.pid)
    return ticks is not None and ticks == record.start_ticks and executable(record.pid) == record.exe


def spawn(service: str, argv: Sequence[str], *, cwd: Path, log_path: Path,
          info: dict[str, str] | None = None) -> ProcessRecord:
    """Start ``argv`` in its own session (it outlives the CLI) with output to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    cwd.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            list(argv), cwd=cwd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, close_fds=True,
        )
    # Read back what the kernel recorded, so later comparisons are like for like. Popen
    # returns after the exec succeeded, so /proc/PID/exe already names the server.
    ticks, exe = start_ticks(proc.pid), executable(proc.pid)
    return ProcessRecord(
        service=service, pid=proc.pid, argv=list(argv), start_ticks=ticks if ticks is not None else -1,
        exe=exe or "", log_path=str(log_path), info=dict(info or {}),
    )


def _reap(pid: int) -> None:
    # When this very process started the server (tests do), it is our child and stays a
    # zombie until waited for; for a server started by an earlier CLI run this is a no-op.
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def stop(record: ProcessRecord, timeout: float = 20.0) -> bool:
    """Stop the recorded process (TERM, then KILL after ``timeout``). False if it was not ours.

    The whole process group is signalled: the server is its session leader, so any helper
    it forked goes with it and nothing is left behind.
    """
    if not is_running(record):
        _reap(record.pid)
        return False
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(record.pid, sig)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            _reap(record.pid)
            if start_ticks(record.pid) != record.start_ticks:
                return True
            time.sleep(0.1)
    return start_ticks(record.pid) != record.start_ticks


def log_tail(path: Path | str, lines: int = 20) -> str:
    """The last ``lines`` lines of a log file (what error messages show)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 16384))
            text = fh.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


class PidFiles:
    """The ``<state>/run/<service>.json`` records of the processes `up` started."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir

    def path(self, service: str) -> Path:
        return self.run_dir / f"{service}.json"

    def read(self, service: str) -> ProcessRecord | None:
        path = self.path(service)
        try:
            return ProcessRecord.from_json(path.read_text())
        except FileNotFoundError:
            return None
        except ValueError:
            # A corrupt pid file cannot identify a process; treat it as absent (and say so
            # by leaving it for `up` to overwrite) rather than guess and signal a stranger.
            return None

    def write(self, record: ProcessRecord) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.path(record.service).with_suffix(".tmp")
        tmp.write_text(record.to_json())
        tmp.replace(self.path(record.service))

    def remove(self, service: str) -> None:
        self.path(service).unlink(missing_ok=True)
