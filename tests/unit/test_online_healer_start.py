"""OnlineHealer.start decides, before the live path starts, whether a store without its epoch marker
needs a rebuild: a live consumer group that has committed nothing reads every topic itself."""

from __future__ import annotations

import threading
import time

from streams.group_view import GroupView
from streams.online.healer import OnlineHealer
from tests.support.wait import wait_for


class FakeMarker:
    """The epoch marker's calls the healer makes, on a store that never had a marker."""

    def __init__(self) -> None:
        self.client = object()  # CONFIG and INFO fail on it: eviction unknown, as on managed Redis
        self.value: str | None = None
        self.finished: list[str] = []

    def read(self) -> str | None:
        return self.value

    def claim_rebuild(self, token: str, lease_ms: int) -> bool:
        time.sleep(0.2)  # a Redis round trip on a loaded machine: the live path starts meanwhile
        self.value = f"rebuilding {token}"
        return True

    def finish(self, token: str) -> bool:
        self.finished.append(token)
        self.value = f"ready {token}"
        return True

    def renew(self, token: str, lease_ms: int) -> bool:
        return True


def healer(marker: FakeMarker, live_path_replays_all) -> OnlineHealer:
    # No groups: a rebuild, if one starts, replays nothing and ends at once (counted in rebuilds_done).
    return OnlineHealer(marker, GroupView(lambda: {}), "127.0.0.1:9", lambda name: name, lambda _batch: None,
                        check_every_s=3600, live_path_replays_all=live_path_replays_all)


def test_the_first_check_is_over_when_start_returns():
    marker = FakeMarker()
    live_started = threading.Event()
    # The live path starts right after start() returns and commits at once: a check still under
    # way then sees a committed group and rebuilds beside a live path that replays everything.
    h = healer(marker, lambda: not live_started.is_set())
    h.start()
    live_started.set()
    try:
        wait_for(lambda: marker.finished and not h.rebuilding, timeout_s=10, what="the first check")
        assert h.rebuilds_done == 0 and len(marker.finished) == 1
    finally:
        h.stop()


def test_a_store_check_that_fails_at_start_does_not_stop_the_start():
    class Down(FakeMarker):
        def read(self) -> str | None:
            raise ConnectionError("Redis is down")

    h = healer(Down(), lambda: True)
    h.start()  # logged, retried by the thread later; the processor still starts
    h.stop()
