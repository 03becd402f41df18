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


# `make test` runs the suite on pytest-xdist workers with `--dist loadfile`: a file is one unit of
# work, handed out in collection order. These files hold the suite's longest tests (minutes each,
# mostly waiting on fixed publish rates, restarts and timeouts; `--durations` of the 2026-12-03 run).
# Starting them first keeps a worker from drawing a ten-minute file when the other is nearly done.
LONG_FILES_FIRST = (
    "test_scale_out.py",
    "test_chaos.py",
    "test_auditor.py",
    "test_aggregations.py",
    "test_sink.py",
    "test_online_healing.py",
    "test_processor.py",
    "test_broker_outage.py",
    "test_acknowledged_writes.py",
    "test_sdk_notebooks.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Move the files of LONG_FILES_FIRST to the front, in that order; every other test keeps its
    place (the sort is stable, and the same on every worker, as xdist requires)."""
    rank = {name: i for i, name in enumerate(LONG_FILES_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
