"""A feature group's status across updates and deletes, as SageMaker reports it.

- UpdateFeatureGroup: DescribeFeatureGroup shows ``LastUpdateStatus`` ``InProgress`` while the
  change is being written to the registry, ``Successful`` once it is (the answer to the update
  comes after that, and from then on every worker judges writes by the new version). A group
  never updated has no ``LastUpdateStatus``, as in SageMaker.
- DeleteFeatureGroup answers at once; the group shows ``FeatureGroupStatus: Deleting`` while the
  delete runs in the background (its online records wiped, its registry entry removed, its topic
  deleted once the processors let go of it), then describing it answers ResourceNotFound.

Both marks are Redis keys (``<prefix>:__updating:<group>``, ``<prefix>:__deleting:<group>``) so
every `serve` worker reports the same status. They expire on their own: a server that stops in
the middle of a delete leaves the group ``Created`` after :data:`MARK_TTL_S`, to be deleted again.

The marks are a courtesy, never a dependency: the control plane keeps answering while Redis is
away or stalled (the registry is in Kafka). Then describe shows what the registry says, an update
goes ahead unmarked, and a delete runs before its answer, as it did before marks existed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

import orjson
import redis

from featurestream.http import control
from schemas.errors import GroupNotFoundError
from schemas.group import FeatureGroup

log = logging.getLogger("featurestream.http.lifecycle")
MARK_TTL_S = 600
_UNAVAILABLE = object()


class Lifecycle:
    """Updates and deletes of feature groups, and the status they show meanwhile."""

    def __init__(self, registry: Any, redis: Callable[[], Any], prefix: str, executor: Executor,
                 on_purge: Callable[[FeatureGroup], None], forget: Callable[[str], None]) -> None:
        self.registry = registry
        self.redis = redis  # called when first needed: the online store connects lazily
        self.prefix = prefix
        self.executor = executor
        self.on_purge = on_purge
        self.forget = forget

    def _mark(self, kind: str, name: str) -> str:
        return f"{self.prefix}:__{kind}:{name}"

    def _marks(self, call: Callable[[Any], Any], what: str) -> Any:
        """``call(redis client)``, or _UNAVAILABLE when Redis does not answer (logged once per call)."""
        try:
            return call(self.redis())
        except (redis.RedisError, OSError) as exc:
            log.warning("group status marks unavailable (%s): %s; answering from the registry", what, exc)
            return _UNAVAILABLE

    def describe(self, group: FeatureGroup, region: str) -> dict[str, Any]:
        out = control.describe(group, region)

        def read(client: Any) -> list[Any]:
            pipe = client.pipeline(transaction=False)
            pipe.exists(self._mark("deleting", group.name))
            pipe.exists(self._mark("updating", group.name))
            return pipe.execute()

        marks = self._marks(read, f"describe {group.name!r}")
        deleting, updating = (0, 0) if marks is _UNAVAILABLE else marks
        if deleting:
            out["FeatureGroupStatus"] = "Deleting"
        if updating:
            out["LastUpdateStatus"] = {"Status": "InProgress"}
        elif group.version > 1:
            out["LastUpdateStatus"] = {"Status": "Successful"}
        return out

    def describe_by_name(self, registry: Any, name: str, region: str) -> dict[str, Any]:
        """DescribeFeatureGroup of ``name``. A group being deleted stays describable, as Deleting, until
        the delete is done: its registry entry goes early in the delete (the processors let go of its
        topic when they see it gone), so the definition is read back from the Deleting mark."""
        try:
            group = registry.describe(name)
            out = self.describe(group, region)
            if group.aggregation is not None:
                from schemas.aggregation_group import source_problem

                problem = source_problem(group, registry.get(group.aggregation.source))
                if problem is not None:  # its source was deleted: said, and reads refuse (README)
                    out["FailureReason"] = problem
            return out
        except GroupNotFoundError:
            mark = self._mark("deleting", name)
            kept = self._marks(lambda client: client.get(mark), f"describe {name!r}")
            if kept is None or kept is _UNAVAILABLE:
                raise
            try:
                group = FeatureGroup.from_dict(orjson.loads(kept))
            except (ValueError, TypeError, KeyError):
                raise GroupNotFoundError(name) from None
            out = control.describe(group, region)
            out["FeatureGroupStatus"] = "Deleting"
            return out

    def update(self, name: str, args: dict[str, Any]) -> None:
        self.registry.describe(name)  # ResourceNotFound before "nothing to change"
        if not args:
            return
        mark = self._mark("updating", name)
        self._marks(lambda client: client.set(mark, "1", ex=MARK_TTL_S), f"update {name!r}")
        try:
            self.registry.update(name, **args)
        finally:
            self._marks(lambda client: client.delete(mark), f"update {name!r}")
            self.forget(name)

    def delete(self, name: str) -> None:
        """Mark the group Deleting and delete it in the background (ResourceNotFound if unknown)."""
        group = self.registry.describe(name)
        mark = self._mark("deleting", name)
        kept = orjson.dumps(group.to_dict())  # describe shows it Deleting from this until it is gone
        marked = self._marks(lambda client: client.set(mark, kept, ex=MARK_TTL_S, nx=True), f"delete {name!r}")
        if marked is _UNAVAILABLE:
            # No mark to show Deleting with: delete before answering, and let a failure reach the
            # caller (Redis away means the online records cannot be wiped: 503, the group is kept).
            try:
                self.registry.delete(name, on_purge=self.on_purge)
            finally:
                self.forget(name)
            return
        if not marked:
            return  # a delete of it is already running
        self.executor.submit(self._delete, name, mark)

    def _delete(self, name: str, mark: str) -> None:
        try:
            self.registry.delete(name, on_purge=self.on_purge)
        except Exception:  # noqa: BLE001 - background: the group stays, describe shows it Created again
            log.exception("deleting feature group %r failed; it is kept, delete it again", name)
        finally:
            self.forget(name)
            self._marks(lambda client: client.delete(mark), f"delete {name!r}")


__all__ = ["MARK_TTL_S", "Lifecycle"]
