"""Running featurestream's long-lived commands (processor, sink, server) as real subprocesses."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

from featurestream.config import Config

# A worker whose metrics port was taken serves on a free one and logs it (streams/metrics_server.py).
_MOVED_PORT = re.compile(r"serving /metrics, /health and /ready on [0-9.]+:(\d+) instead")


def stack_env(stack: Config) -> dict[str, str]:
    """This process's environment, pointed at the test stack."""
    return {**os.environ, **stack.to_env()}


class Proc:
    """A featurestream CLI command in its own process, its output in a log file."""

    def __init__(self, stack: Config, args: list[str], log: Path, *, extra_env: dict[str, str] | None = None) -> None:
        self.log = log
        self._out = log.open("ab")
        self._log_start = self._out.tell()  # a restarted worker appends to its predecessor's log
        env = {**stack_env(stack), **(extra_env or {})}
        self.popen = subprocess.Popen([sys.executable, "-m", "featurestream.cli", *args], env=env,
                                      stdout=self._out, stderr=subprocess.STDOUT, start_new_session=True)

    def kill(self) -> None:
        """kill -9: no cleanup, no final commit."""
        if self.popen.poll() is None:
            os.kill(self.popen.pid, signal.SIGKILL)
        self.popen.wait(timeout=30)

    def stop(self) -> None:
        terminate(self.popen, grace_s=30)
        self._out.close()

    def alive(self) -> bool:
        return self.popen.poll() is None

    def children(self) -> list[int]:
        """Pids of its direct child processes (the online processor's apply process)."""
        return child_pids(self.popen.pid)

    def metrics_port(self) -> int:
        """The port it serves /metrics and /ready on: the ``--metrics-port`` it was given, or the one it
        moved to. A test's free_port() cannot hold a port until the worker binds it: under -n 2 another
        process took one in a CI-like run, and the test polled a port the sink did not serve, for 90 s."""
        with self.log.open("rb") as f:
            f.seek(self._log_start)
            moved = _MOVED_PORT.search(f.read().decode(errors="replace"))
        if moved:
            return int(moved.group(1))
        args = list(self.popen.args)
        return int(args[args.index("--metrics-port") + 1])

    def tail(self, n: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])


def terminate(popen: subprocess.Popen, *, grace_s: float) -> None:
    """SIGTERM (the worker drains and commits), then SIGKILL if it is not gone within ``grace_s``."""
    if popen.poll() is None:
        popen.send_signal(signal.SIGTERM)
        try:
            popen.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            popen.kill()
            popen.wait(timeout=30)


def child_pids(pid: int) -> list[int]:
    """Direct children of ``pid``, from /proc (empty if it is gone)."""
    out: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            out += [int(c) for c in (task / "children").read_text().split()]
    except OSError:
        pass
    return out


def worker_ready(port: int) -> bool:
    """Whether the processor or sink serving metrics on ``port`` answers /ready with 200."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=2) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False
