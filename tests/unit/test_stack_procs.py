"""Pid files and process identity: `down` must stop exactly what `up` started."""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import replace
from pathlib import Path

import pytest

from featurestream.stack import procs

SLEEP = shutil.which("sleep")


def _gone(pid: int, deadline_s: float = 5.0) -> bool:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if procs.start_ticks(pid) is None:  # absent, or a zombie awaiting its reaper
            return True
        time.sleep(0.05)
    return False


def test_record_round_trips_through_json() -> None:
    rec = procs.ProcessRecord("kafka", 12, ["java", "-cp", "x"], 999, "/usr/bin/java", "/s/logs/kafka.log",
                              {"endpoint": "127.0.0.1:19092"})
    assert procs.ProcessRecord.from_json(rec.to_json()) == rec


@pytest.mark.parametrize("text", ["", "garbage", "[]", "null", '{"service": "kafka"}',
                                  '{"service":"k","pid":"abc","argv":[],"start_ticks":1,"exe":"","log_path":""}'])
def test_bad_pid_files_are_rejected(text: str) -> None:
    with pytest.raises(ValueError):
        procs.ProcessRecord.from_json(text)


def test_pid_files_ignore_corrupt_records(tmp_path: Path) -> None:
    files = procs.PidFiles(tmp_path / "run")
    assert files.read("kafka") is None
    (tmp_path / "run").mkdir()
    files.path("kafka").write_bytes(b"\xff\x00garbage")
    assert files.read("kafka") is None


@pytest.mark.skipif(SLEEP is None, reason="needs sleep(1)")
def test_spawn_records_identity_and_stop_ends_the_process(tmp_path: Path) -> None:
    rec = procs.spawn("s", [SLEEP, "60"], cwd=tmp_path, log_path=tmp_path / "logs" / "s.log")
    try:
        assert procs.is_running(rec)
        files = procs.PidFiles(tmp_path / "run")
        files.write(rec)
        assert files.read("s") == rec
        assert os.getsid(rec.pid) == rec.pid  # its own session: it outlives the CLI that started it
        assert procs.stop(rec, timeout=5)
        assert _gone(rec.pid)
        assert not procs.is_running(rec)
        assert procs.stop(rec) is False  # second stop: nothing of ours to stop
    finally:
        if procs.is_running(rec):
            os.killpg(rec.pid, 9)


@pytest.mark.skipif(SLEEP is None, reason="needs sleep(1)")
def test_a_reused_pid_is_never_signalled(tmp_path: Path) -> None:
    rec = procs.spawn("s", [SLEEP, "60"], cwd=tmp_path, log_path=tmp_path / "s.log")
    try:
        # Same pid, different start time or executable: a stranger that inherited the number.
        for stranger in (replace(rec, start_ticks=rec.start_ticks - 1), replace(rec, exe="/usr/bin/other")):
            assert not procs.is_running(stranger)
            assert procs.stop(stranger) is False
        assert procs.is_running(rec)
    finally:
        procs.stop(rec, timeout=5)


def test_log_tail(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    log.write_text("".join(f"line {i}\n" for i in range(100)))
    assert procs.log_tail(log, 3) == "line 97\nline 98\nline 99"
    assert procs.log_tail(tmp_path / "missing.log") == ""
    log.write_bytes(b"\xff\xfe bad bytes\n")
    assert "bad bytes" in procs.log_tail(log)
