"""Shared plumbing of the publish and online benchmarks: timing, CPU accounting, the bench group.

Every benchmark gets its endpoints from ``Config.from_env()`` (run ``eval "$(featurestream up)"``
first), creates its own uniquely named feature group, and deletes it at the end.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as `python bench/x.py` from anywhere
    sys.path.insert(0, str(ROOT))

from tests.integration.helpers import customer, customers_group  # noqa: E402,F401  (the shapes tests use)

CLK_TCK = os.sysconf("SC_CLK_TCK")


def median(values: Iterable[float]) -> float:
    return statistics.median(list(values))


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} cores"


def unique_name(kind: str) -> str:
    return f"bench-{kind}-{os.getpid()}-{time.time_ns() % 10**9}"


def _threads(pid: int | str) -> list[tuple[str, str, float]] | None:
    """(thread id, name, CPU seconds user+system) of each thread of process ``pid``; None when it is gone."""
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return None
    out = []
    for task in tasks:
        try:
            comm = (task / "comm").read_text().strip()
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the thread ended while we looked
        out.append((task.name, comm, (int(fields[11]) + int(fields[12])) / CLK_TCK))  # utime, stime (stat 14, 15)
    return out


def thread_cpu(pid: int | str = "self") -> dict[str, float]:
    """CPU seconds (user+system) per thread name of process ``pid``, summed over same-named threads.

    librdkafka names its threads ``rdk:main`` / ``rdk:broker...``, so this splits the producer's
    C threads from the Python interpreter's thread(s).
    """
    threads = _threads(pid)
    if threads is None:
        raise FileNotFoundError(f"/proc/{pid}/task: the process is gone")
    out: dict[str, float] = {}
    for _tid, comm, seconds in threads:
        name = "rdkafka" if comm.startswith("rdk:") else comm
        out[name] = out.get(name, 0.0) + seconds
    return out


def thread_roles(pid: int) -> dict[str, float]:
    """CPU seconds of process ``pid``'s threads by role: ``main`` (the thread whose id is the process's: an
    HTTP worker's event loop), ``rdkafka`` (librdkafka's C threads, named ``rdk:*``) and ``other`` (every
    other thread: Python's delivery-report and pool threads...). Empty when the process is gone."""
    threads = _threads(pid)
    if threads is None:
        return {}
    out = {"main": 0.0, "rdkafka": 0.0, "other": 0.0}
    for tid, comm, seconds in threads:
        out["main" if tid == str(pid) else "rdkafka" if comm.startswith("rdk:") else "other"] += seconds
    return out


def process_cpu(pid: int) -> float:
    """CPU seconds (user+system, threads included) of process ``pid``; 0 if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def service_pid(config: Any, service: str) -> int | None:
    """pid of a local-stack service (``kafka``, ``redis``, ``s3``; for CPU accounting), from
    ``featurestream up``'s run file in ``config.state_dir``; None when it is not found."""
    try:
        return int(json.loads((config.state_dir / "run" / f"{service}.json").read_text())["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def children_cpu() -> float:
    """CPU seconds of reaped child processes (ingest's worker pool, once shut down)."""
    ru = os.times()
    return ru.children_user + ru.children_system


def rss_mb(pid: int) -> float:
    """Resident set size of ``pid`` in MiB (VmRSS), 0 if it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def broker_pid(state_dir: Path) -> int | None:
    """The local stack's Kafka broker pid (from `featurestream up`'s run file), if there is one."""
    import json

    try:
        return int(json.loads((state_dir / "run" / "kafka.json").read_text())["pid"])
    except (OSError, ValueError, KeyError):
        return None


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return float("nan")
    k = max(0, min(len(sorted_values) - 1, math.ceil(q / 100 * len(sorted_values)) - 1))
    return sorted_values[k]
