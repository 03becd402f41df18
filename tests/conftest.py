"""Fixtures shared by unit and integration tests: unique names per session and per test."""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable

import pytest

# One token per pytest session: topic prefixes and group names built from it never collide
# with an earlier run against the same (long-lived, external) Kafka.
SESSION_TOKEN = f"{time.strftime('%Y%m%d%H%M%S')}{secrets.token_hex(3)}"
_NAME_CHARS = re.compile(r"[^A-Za-z0-9_-]+")


@pytest.fixture(scope="session")
def session_token() -> str:
    return SESSION_TOKEN


@pytest.fixture(scope="session")
def topic_prefix() -> str:
    """The Kafka topic prefix of this test session (goes into Config.topic_prefix)."""
    return f"fstest-{SESSION_TOKEN}"


@pytest.fixture
def unique_name() -> Callable[..., str]:
    """``unique_name("orders")`` → a valid, never-repeated group name such as ``orders-1a2b3c4d``.

    Valid per the naming rules: 1-64 characters, letters/digits/``-``/``_``, starting and
    ending with a letter or digit.
    """
    def make(prefix: str = "g") -> str:
        stem = _NAME_CHARS.sub("-", prefix).strip("-_")[:40] or "g"
        return f"{stem}-{secrets.token_hex(4)}"

    return make


# `make test` runs the suite on 2 pytest-xdist workers. A file is one unit of work, so it stays on one
# worker and its module fixtures start once, except the files of SERIAL_FILES: they are one unit
# together, so they run one after the other on one worker. Units are handed out in collection order
# (`--no-loadscope-reorder`; xdist would otherwise start the files with the most tests), and the
# longest go first.
#
# SERIAL_FILES are the suite's CPU-hungriest tests: many workers rolled under a fixed-rate load, and
# a stack killed three times under a 300k-row ingest. Run beside each other on 2 cores (load
# average 24), the chaos test took 622 s instead of 206 and a scale-out recovery missed its 120 s.
SERIAL_FILES = ("test_scale_out.py", "test_chaos.py")
SERIAL_UNIT = "serial-cpu-hungry"
# The files with the longest tests after those (minutes each, mostly waiting on rates, restarts and
# timeouts; `--durations` of the 2026-12-03 runs): started early, so no worker draws one last.
LONG_FILES_FIRST = (
    *SERIAL_FILES,
    "test_aggregations.py",
    "test_auditor.py",
    "test_online_healing.py",
    "test_sink.py",
    "test_processor.py",
    "test_broker_outage.py",
    "test_acknowledged_writes.py",
    "test_sdk_notebooks.py",
    "test_deadletter_redrive.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Move the files of LONG_FILES_FIRST to the front, in that order: a stable sort, the same on
    every worker, as xdist requires."""
    rank = {name: i for i, name in enumerate(LONG_FILES_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    """xdist's file scheduler with SERIAL_FILES as one unit.

    xdist's own grouping (`--dist loadgroup`, the xdist_group mark) does nothing on pytest 9.2:
    it renames item._nodeid, which pytest 9 no longer reads. The hook is xdist's documented way to
    bring a scheduler; naming the units means overriding ``_split_scope``, a protected method, as
    xdist's own LoadFileScheduling does. So it is tied to the pinned xdist (constraints.txt)."""
    from xdist.scheduler import LoadFileScheduling

    class FilesWithSerialUnit(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = super()._split_scope(nodeid)
            return SERIAL_UNIT if path.rsplit("/", 1)[-1] in SERIAL_FILES else path

    return FilesWithSerialUnit(config, log)
