"""The server's newer doors, wired in one place so that ``app.py`` only routes to them:
the Athena-compatible API (``athena.py``), ListRecords and UpdateRecord (``runtime_v2.py``), and
the status of updates and deletes (``lifecycle.py``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from typing import Any

from featurestream.http.athena import OPERATIONS as ATHENA_OPERATIONS
from featurestream.http.athena import AthenaApi
from featurestream.http.errors import ApiError
from featurestream.http.lifecycle import Lifecycle
from featurestream.http.permissions import Permissions
from featurestream.http.runtime import RuntimeApi
from featurestream.http.runtime_v2 import RecordsV2
from featurestream.sdk import FeatureStore

MARKS_TIMEOUT_S = 0.5


class Doors:
    """Built by ``app.Server`` from its store, thread pool, runtime API and its way to run blocking calls."""

    def __init__(self, store: FeatureStore, executor: Executor, runtime: RuntimeApi,
                 run_blocking: Callable[..., Awaitable[Any]]) -> None:
        self.store = store
        self.athena_api = AthenaApi(store, run_blocking)
        self.records_v2 = RecordsV2(runtime)
        self.lifecycle = Lifecycle(store.registry, self._marks_client, store.config.topic_prefix,
                                   executor, self._wipe_online, runtime.groups.forget)
        self._marks: Any = None

    def _marks_client(self) -> Any:
        """A Redis client of its own for the status marks, with a short timeout: a stalled Redis
        must not hold DescribeFeatureGroup for the read timeout of the record reads."""
        if self._marks is None:
            from sinks.online.connect import connect

            self._marks = connect(self.store.config.require("redis_url"), timeout_s=MARKS_TIMEOUT_S,
                                  check=False)
        return self._marks

    def _wipe_online(self, group: Any) -> None:
        if group.online_enabled:
            self.store.online.wipe_group(group)

    def close(self) -> None:
        self.athena_api.close()
        if self._marks is not None:
            self._marks.close()

    async def athena(self, operation: str, target: str, body: dict[str, Any],
                     permissions: Permissions) -> dict[str, Any]:
        if operation not in ATHENA_OPERATIONS:
            raise ApiError("UnknownOperationException",
                           f"operation {target[:80]!r} is not supported; featurestream serves "
                           f"{', '.join('AmazonAthena.' + o for o in ATHENA_OPERATIONS)}", 400)
        return await self.athena_api.handle(operation, body, permissions)

    async def records(self, operation: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        if operation == "ListRecords":
            return await self.records_v2.list_records(name, body)
        return await self.records_v2.update_record(name, body)


__all__ = ["Doors"]
