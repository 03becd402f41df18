"""A short-lived cache of feature-group definitions in front of the registry.

The registry answers every describe after a Kafka watermark round trip under a lock; doing
that on every GetRecord would serialise all requests on one Kafka call. Definitions change
rarely, so a worker keeps each for ``max_age_s`` and re-reads it sooner when a request shows
it may be stale (a put naming a feature it does not know yet). A miss always asks the
registry, so a group created a moment ago by another process is found at once. An entry
past its age is answered from the cache while one background thread re-reads it, so no
request ever waits on the registry for a group it already knows.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from schemas.group import FeatureGroup


class GroupCache:
    def __init__(self, fetch: Callable[[str], FeatureGroup | None], *, max_age_s: float = 2.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._fetch = fetch
        self._max_age_s = max_age_s
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[float, FeatureGroup]] = {}
        self._refreshing: set[str] = set()

    def get(self, name: str, *, fresh: bool = False) -> FeatureGroup | None:
        """The group (None if it does not exist); ``fresh`` bypasses the cache."""
        now = self._clock()
        if not fresh:
            entry = self._entries.get(name)
            if entry is not None:
                if now - entry[0] >= self._max_age_s:
                    self._refresh_in_background(name)
                return entry[1]
        return self._load(name, now)

    def _load(self, name: str, now: float) -> FeatureGroup | None:
        group = self._fetch(name)
        with self._lock:
            if group is None:
                self._entries.pop(name, None)
            else:
                self._entries[name] = (now, group)
        return group

    def _refresh_in_background(self, name: str) -> None:
        with self._lock:
            if name in self._refreshing:
                return
            self._refreshing.add(name)

        def refresh() -> None:
            try:
                self._load(name, self._clock())
            except Exception:  # keep serving the known definition; the next stale read retries
                pass
            finally:
                with self._lock:
                    self._refreshing.discard(name)

        threading.Thread(target=refresh, name=f"featurestream-group-{name}", daemon=True).start()

    def __contains__(self, name: object) -> bool:
        """Known (possibly stale): a get() of it answers without waiting on the registry."""
        return name in self._entries

    def forget(self, name: str) -> None:
        with self._lock:
            self._entries.pop(name, None)
