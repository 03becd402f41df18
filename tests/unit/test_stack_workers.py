"""Workers announce the metrics port they bound, so `featurestream status` finds each one."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from featurestream.stack.workers import announce, running_workers, workers_dir


def test_a_running_worker_is_found_and_a_dead_ones_file_is_pruned(tmp_path) -> None:
    mine = announce(tmp_path, "sink", "0.0.0.0", 40123)
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    dead = workers_dir(tmp_path) / f"processor-{child.pid}.json"
    dead.write_text(json.dumps({"role": "processor", "pid": child.pid, "start_ticks": 1, "host": "127.0.0.1",
                                "port": 9108}))
    (found,) = running_workers(tmp_path)
    assert (found.role, found.pid, found.port, found.url) == ("sink", os.getpid(), 40123, "http://127.0.0.1:40123")
    assert mine.exists() and not dead.exists()


def test_a_recycled_pid_is_not_mistaken_for_the_worker(tmp_path) -> None:
    path = workers_dir(tmp_path) / "processor-1.json"
    path.parent.mkdir(parents=True)
    # Our own pid, but another start time: a process that reused the pid of a dead worker.
    path.write_text(json.dumps({"role": "processor", "pid": os.getpid(), "start_ticks": 1, "host": "127.0.0.1",
                                "port": 9108}))
    assert running_workers(tmp_path) == []
    assert not path.exists()


def test_the_file_goes_when_the_worker_exits(tmp_path) -> None:
    code = ("import sys; from pathlib import Path; from featurestream.stack.workers import announce; "
            "print(announce(Path(sys.argv[1]), 'processor', '127.0.0.1', 9999))")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, check=True)
    assert out.stdout.strip().endswith(".json")
    assert list(workers_dir(tmp_path).glob("*.json")) == []
