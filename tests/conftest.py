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
