"""Where this host's processors and sinks serve /metrics, /health and /ready.

Several workers on one host cannot all have the default metrics port: a worker whose port is
taken moves to a free one (streams/metrics_server.py). So that `featurestream status` still
finds every one, each worker announces the port it bound in ``<state dir>/workers/`` (one JSON
file per process, identified by pid and start time so a recycled pid is not mistaken for it),
and removes the file when it exits. A file left by a killed worker is ignored and pruned.
"""

from __future__ import annotations

import atexit
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from featurestream.stack import procs


@dataclass(frozen=True)
class WorkerEndpoint:
    role: str        # "processor" or "sink"
    pid: int
    start_ticks: int
    host: str
    port: int

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}"


def workers_dir(state_dir: Path) -> Path:
    return state_dir / "workers"


def announce(state_dir: Path, role: str, host: str, port: int) -> Path:
    """Record this process's metrics endpoint; the file is removed at exit."""
    pid = os.getpid()
    endpoint = WorkerEndpoint(role, pid, procs.start_ticks(pid) or 0, host, port)
    directory = workers_dir(state_dir)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{role}-{pid}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(endpoint)))
    tmp.replace(path)
    atexit.register(path.unlink, missing_ok=True)
    return path


def running_workers(state_dir: Path) -> list[WorkerEndpoint]:
    """Endpoints of the workers still running, by role then pid; stale files are deleted."""
    found = []
    for path in sorted(workers_dir(state_dir).glob("*.json")):
        try:
            data = json.loads(path.read_text())
            endpoint = WorkerEndpoint(str(data["role"]), int(data["pid"]), int(data["start_ticks"]),
                                      str(data["host"]), int(data["port"]))
        except (OSError, ValueError, KeyError, TypeError):
            continue  # being written, or not ours: leave it
        if procs.start_ticks(endpoint.pid) != endpoint.start_ticks:
            path.unlink(missing_ok=True)  # the process is gone (or its pid was reused)
            continue
        found.append(endpoint)
    return sorted(found, key=lambda e: (e.role, e.pid))
