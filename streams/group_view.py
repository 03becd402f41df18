"""Every process's view of the feature-group definitions, with one refresh rule.

The SDK, the HTTP API, the online processor, its apply child, the offline sink and replay
all read definitions through a :class:`GroupView` in front of their :class:`~streams.registry.Registry`.

The rule, in one place:

- **A miss asks the registry at once.** A group created a moment ago by another process is
  found on first use (a ``get`` of an unknown name, or ``fresh=True``, catches up with the
  registry topic before answering).
- **A view older than ``max_age_s`` is refreshed in the background** while the known
  definitions keep answering, so no read waits on Kafka for a group it already knows, and a
  broker outage never stops online reads of known groups. A failed background refresh is
  retried on the next stale read.
- **A caller that sees a sign of staleness** (a put naming a feature its definition lacks)
  asks ``get(name, fresh=True)``.

Catching up is one watermark round trip when nothing changed (``Registry.refresh``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from schemas.errors import GroupNotFoundError
from schemas.group import FeatureGroup

log = logging.getLogger("featurestream.registry")

Load = Callable[[], dict[str, FeatureGroup]]


class GroupView:
    """A cached ``{name: FeatureGroup}`` over ``load`` (normally ``Registry.refresh``). Thread-safe."""

    def __init__(self, load: Load, *, max_age_s: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._load = load
        self.max_age_s = max_age_s
        self._clock = clock
        self._lock = threading.Lock()
        self._groups: dict[str, FeatureGroup] = {}
        self._at = float("-inf")
        self._loaded = False
        self._refreshing = False

    def all(self, *, fresh: bool = False) -> dict[str, FeatureGroup]:
        """Every group by name (the first call, and ``fresh``, wait for the registry)."""
        if fresh or not self._loaded:
            return self._reload()
        groups = self._groups  # what this call answers, whatever the refresh does meanwhile
        self._maybe_refresh_in_background()
        return groups

    def get(self, name: str, *, fresh: bool = False) -> FeatureGroup | None:
        """The group, or None if the registry does not have it (a miss always asks the registry)."""
        groups = self.all(fresh=fresh)
        group = groups.get(name)
        if group is None and not fresh:
            group = self._reload().get(name)
        return group

    def is_current(self, group: FeatureGroup) -> bool:
        """Whether ``group`` is still the registry's life of its name (asked fresh: a writer about to
        create something for a group the registry may have deleted or created again meanwhile)."""
        latest = self.get(group.name, fresh=True)
        return latest is not None and latest.life == group.life

    def describe(self, name: str, *, fresh: bool = False) -> FeatureGroup:
        """The group; raises GroupNotFoundError naming it when the registry does not have it."""
        group = self.get(name, fresh=fresh)
        if group is None:
            raise GroupNotFoundError(name)
        return group

    def aggregation_problem(self, group: FeatureGroup) -> str | None:
        """Why aggregation group ``group`` cannot be read (its source deleted, or deleted and created
        again), or None (and for a plain group)."""
        if group.aggregation is None:
            return None
        from schemas.aggregation_group import source_problem

        return source_problem(group, self.get(group.aggregation.source))

    def __contains__(self, name: object) -> bool:
        """Known (possibly stale): a ``get`` of it answers without waiting on the registry."""
        return name in self._groups

    def forget(self, name: str) -> None:
        """Drop ``name`` (deleted or changed by this process): its next ``get`` asks the registry."""
        with self._lock:
            if name in self._groups:
                self._groups = {k: v for k, v in self._groups.items() if k != name}

    def refresh_if_older(self, age_s: float) -> None:
        """Catch up with the registry now, waiting, when the view is older than ``age_s``.

        For a worker about to judge a batch after being idle: the background refresh runs only
        when the view is read, so an idle processor's first batch would otherwise be judged by a
        view of any age, and miss an aggregation group created meanwhile (nothing in its source's
        records says the group exists). Raises what the registry raises (Kafka down)."""
        if not self._loaded or self._clock() - self._at >= age_s:
            self._reload()

    def _reload(self) -> dict[str, FeatureGroup]:
        groups = self._load()
        with self._lock:
            self._groups, self._at, self._loaded = dict(groups), self._clock(), True
            return self._groups

    def _maybe_refresh_in_background(self) -> None:
        with self._lock:
            if self._refreshing or self._clock() - self._at < self.max_age_s:
                return
            self._refreshing = True

        def refresh() -> None:
            try:
                self._reload()
            except Exception as exc:  # noqa: BLE001 - keep answering from what we know; retry when stale
                log.debug("background refresh of the feature-group view failed: %s", exc)
            finally:
                with self._lock:
                    self._refreshing = False

        threading.Thread(target=refresh, name="featurestream-group-view", daemon=True).start()
