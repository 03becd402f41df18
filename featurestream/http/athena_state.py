"""Where the Athena-compatible API keeps its query executions: Redis, shared by every worker.

`serve --workers N` forks processes behind one socket, so the GetQueryExecution that follows a
StartQueryExecution may reach another worker; each execution is therefore one Redis hash
(``<prefix>:__athena:q:<id>``: its state and its JSON document), listed newest first in a sorted
set, with its ``ClientRequestToken`` mapped to its id. Group names start with a letter or digit,
so these keys never meet the online store's ``<prefix>:<group>:<id>`` keys. Executions are kept
for :data:`RETENTION_S`.

A state only moves forward: QUEUED/RUNNING to SUCCEEDED, FAILED or CANCELLED, once, checked
inside Redis (a stop racing a finishing query leaves exactly one of the two).
"""

from __future__ import annotations

import time
from typing import Any

import orjson

RETENTION_S = 7 * 24 * 3600
ACTIVE = ("QUEUED", "RUNNING")
TERMINAL = ("SUCCEEDED", "FAILED", "CANCELLED")

# KEYS[1]: the execution; ARGV: new state, new document. 1 if moved, 0 if it was terminal already.
_ADVANCE = """
local state = redis.call('HGET', KEYS[1], 'state')
if state == 'QUEUED' or state == 'RUNNING' then
  redis.call('HSET', KEYS[1], 'state', ARGV[1], 'doc', ARGV[2])
  return 1
end
return 0
"""


class Executions:
    """Query executions of one topic prefix in Redis (any redis-py client, Cluster included)."""

    def __init__(self, client: Any, prefix: str) -> None:
        self.client = client
        self.prefix = prefix
        self._list_key = f"{prefix}:__athena:list"
        self._advance = client.register_script(_ADVANCE)

    def _key(self, execution_id: str) -> str:
        return f"{self.prefix}:__athena:q:{execution_id}"

    def _token_key(self, token: str) -> str:
        return f"{self.prefix}:__athena:token:{token}"

    def claim_token(self, token: str, execution_id: str) -> str:
        """``execution_id`` if ``token`` is new, else the id of the execution that used it first."""
        key = self._token_key(token)
        if self.client.set(key, execution_id, nx=True, ex=RETENTION_S):
            return execution_id
        found = self.client.get(key)
        return execution_id if found is None else found.decode()

    def create(self, execution_id: str, doc: dict[str, Any]) -> None:
        now = time.time()
        self.client.hset(self._key(execution_id), mapping={"state": doc["Status"]["State"], "doc": orjson.dumps(doc)})
        self.client.expire(self._key(execution_id), RETENTION_S)
        self.client.zadd(self._list_key, {execution_id: now})
        self.client.zremrangebyscore(self._list_key, 0, now - RETENTION_S)

    def get(self, execution_id: str) -> dict[str, Any] | None:
        raw = self.client.hget(self._key(execution_id), "doc")
        return None if raw is None else orjson.loads(raw)

    def advance(self, execution_id: str, doc: dict[str, Any]) -> bool:
        """Store ``doc`` (with its new state) unless the execution already ended; True if stored."""
        moved = self._advance(keys=[self._key(execution_id)],
                              args=[doc["Status"]["State"], orjson.dumps(doc)])
        return bool(moved)

    def ids(self, offset: int, limit: int) -> tuple[list[str], bool]:
        """Execution ids, newest first, from ``offset``; and whether more follow."""
        found = self.client.zrevrange(self._list_key, offset, offset + limit)
        ids = [v.decode() if isinstance(v, bytes) else v for v in found]
        return ids[:limit], len(ids) > limit


__all__ = ["ACTIVE", "RETENTION_S", "TERMINAL", "Executions"]
