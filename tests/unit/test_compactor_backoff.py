"""The sink's background compactor backs off while its dependencies are away (issue 10, item 5)."""

from __future__ import annotations

import logging

from schemas.backoff import Backoff
from schemas.errors import ServiceUnavailableError
from streams.offline.compactor import BackgroundCompactor


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Registry:
    """Stands in for the GroupView: unreachable until ``up`` is set."""

    def __init__(self) -> None:
        self.up = False
        self.calls = 0

    def all(self) -> dict:
        self.calls += 1
        if not self.up:
            raise ServiceUnavailableError("Kafka at 127.0.0.1:1 does not answer")
        return {}


def test_backoff_doubles_up_to_its_cap_and_resets() -> None:
    clock = FakeClock()
    b = Backoff(1, 300, clock=clock)
    assert b.due()
    delays = [b.failed() for _ in range(12)]
    assert delays == [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]
    assert not b.due()
    clock.now += 300
    assert b.due()
    b.succeeded()
    assert b.failed() == 1


def test_an_outage_logs_once_per_growing_interval_not_every_second(caplog) -> None:
    clock = FakeClock()
    registry = Registry()
    compactor = BackgroundCompactor(None, registry, "fs", set, every_s=300, clock=clock)  # type: ignore[arg-type]
    with caplog.at_level(logging.ERROR, logger="featurestream.offline"):
        for _ in range(3600):  # one hour of the loop's one-second passes, broker away
            compactor.tick()
            clock.now += 1
    failures = [r for r in caplog.records if "background compaction failed" in r.getMessage()]
    # 1, 2, 4 ... 256 s, then every 300 s: 9 + 11 attempts in an hour, not 3600.
    assert 15 <= len(failures) <= 22, len(failures)
    assert registry.calls == len(failures)
    assert "retrying in 300 s" in failures[-1].getMessage()
    assert "retrying in 1 s" in failures[0].getMessage()

    registry.up = True
    clock.now += 300
    caplog.clear()
    for _ in range(10):
        compactor.tick()
        clock.now += 1
    assert not caplog.records
    # Back to normal: the overdue compaction and maintenance passes read the registry once each, and
    # the passes in between, with nothing due, do not touch it.
    assert registry.calls == len(failures) + 2
