"""Compaction against a REAL S3 server and a local directory: crash at every step, and a real
``kill -9`` of a process compacting in a loop while this one keeps writing and reading."""

from __future__ import annotations

import json
import random
import secrets
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from sinks.offline.catalog import read_manifests
from sinks.offline.compaction import STEPS, compact_table, recover
from sinks.offline.errors import CompactionCrash
from sinks.offline.fs import open_filesystem
from tests.support.offline import (
    TOPIC,
    file_stats,
    live_coordinates,
    print_stats,
    write_small_files,
)
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
FOREVER = 10**15

# The compactor process: recover, then compact everything committed, forever.
COMPACTOR = """
import json, sys
from sinks.offline.compaction import compact_table
from sinks.offline.fs import open_filesystem
from tests.support.wait import wait_for
uri, opts, topic = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
fs, table = open_filesystem(uri, opts)
committed = {(topic, p): 10**15 for p in range(4)}
while True:
    for r in compact_table(fs, table, committed, target_bytes=10**9):
        print("compacted", r.hour, len(r.inputs), flush=True)
"""


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    """(fs, root, uri, storage options) of a fresh local directory or S3 prefix."""
    if request.param == "local":
        uri, opts = str(tmp_path / "offline"), {}
    else:
        cfg = request.getfixturevalue("s3_config")
        uri, opts = f"{cfg.offline_uri}/c-{secrets.token_hex(4)}", cfg.storage_options()
    fs, root = open_filesystem(uri, opts)
    if request.param == "s3" and not fs.exists(root.split("/", 1)[0]):
        fs.mkdir(root.split("/", 1)[0])
    yield fs, root, uri, opts
    if request.param == "s3" and fs.exists(root):
        fs.rm(root, recursive=True)


def crash_at(step: str):
    def hook(name: str) -> None:
        if name == step:
            raise CompactionCrash(f"injected crash after {name}")
    return hook


@pytest.mark.parametrize("step", STEPS)
def test_crash_after_each_step(store, step: str) -> None:
    fs, root, *_ = store
    table, expected, committed = write_small_files(fs, root, batches=5)
    with pytest.raises(CompactionCrash):
        compact_table(fs, table, committed, hook=crash_at(step))
    assert live_coordinates(fs, table) == expected
    recover(fs, table)
    assert live_coordinates(fs, table) == expected
    compact_table(fs, table, committed)
    assert live_coordinates(fs, table) == expected
    assert all(len(s) == 1 for s in file_stats(fs, table).values())


def test_files_per_partition_and_bytes_per_file_before_and_after(store) -> None:
    fs, root, *_ = store
    table, expected, committed = write_small_files(fs, root, partitions=3, batches=10, batch_size=200, hours=3)
    before = file_stats(fs, table)
    compact_table(fs, table, committed)
    after = file_stats(fs, table)
    print()
    print_stats("before compaction", before)
    print_stats("after compaction", after)
    assert all(len(s) == 30 for s in before.values()) and all(len(s) == 1 for s in after.values())
    assert sum(map(sum, after.values())) < sum(map(sum, before.values()))
    assert live_coordinates(fs, table) == expected



def test_kill_9_during_compaction_loop_while_writing_and_reading(store) -> None:
    fs, root, uri, opts = store
    table, expected, _ = write_small_files(fs, root, partitions=2, batches=4, batch_size=30)
    table_uri = table if not uri.startswith("s3://") else f"s3://{table}"
    rng = random.Random(7)
    start = 10_000
    for round_ in range(3):
        proc = subprocess.Popen([sys.executable, "-c", COMPACTOR, table_uri, json.dumps(opts), TOPIC],
                                cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            ids_before = set(read_manifests(fs, table))
            for _ in range(4):      # keep feeding small committed files; every read must be exact
                _, more, _ = write_small_files(fs, root, partitions=2, batches=1, batch_size=30, start=start)
                start += 1000
                expected += more
                assert live_coordinates(fs, table) == expected
            # every compaction commits a manifest with a new id (older ones get retired)
            wait_for(lambda p=proc, ids=ids_before: set(read_manifests(fs, table)) != ids
                     or p.poll() is not None, timeout_s=60, what="the compactor to commit a compaction")
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            time.sleep(rng.choice([0.0, 0.0, 0.02, 0.2]))  # kill at a random point, often mid-step
            assert live_coordinates(fs, table) == expected
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
        assert proc.returncode == -signal.SIGKILL, f"round {round_}: compactor was not killed but ended"
        assert live_coordinates(fs, table) == expected, f"round {round_}: wrong rows right after kill -9"
        print(f"\nround {round_}: killed; recover removed {recover(fs, table)}")
        assert live_coordinates(fs, table) == expected, f"round {round_}: wrong rows after recover"
    compact_table(fs, table, {(TOPIC, 0): FOREVER, (TOPIC, 1): FOREVER})
    assert live_coordinates(fs, table) == expected
    assert all(len(s) == 1 for s in file_stats(fs, table).values())
    assert sum(expected.values()) == len(expected) == Counter(expected).total()
