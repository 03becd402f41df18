"""The online store's epoch marker: how a processor notices that Redis lost the online store.

Redis can lose everything it holds without an error anyone sees: a restart without
persistence, a FLUSHALL, a failover to an empty replica, a URL now pointing at another
server. The Kafka offsets the processor committed still say "applied", so nothing would ever
be written again for ids that do not change. One key, ``<prefix>:__online_epoch``, says
whether the data beside it is whole:

- **absent**: the store is not known to be whole (never built, or lost): rebuild it;
- ``rebuilding:<token>``, with a lease (TTL): one processor is rebuilding it and renews the
  lease while it works; if it dies, the lease runs out and another processor starts again;
- ``ready:<token>``: a rebuild (or the first build) finished; nothing was lost since, because a
  loss takes this key with it.

A failover to a replica that missed only the last writes keeps the marker and is *not* seen
here (no marker can tell which writes a replica missed); the README says what to run then.
"""

from __future__ import annotations

from typing import Any

from schemas.names import online_epoch_key

READY = "ready:"
REBUILDING = "rebuilding:"

# SET the marker to ARGV[2] only if it still holds ARGV[1] (compare-and-set in one step).
_SWAP = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2])
  if ARGV[3] ~= '' then redis.call('PEXPIRE', KEYS[1], ARGV[3]) end
  return 1
end
return 0
"""


class EpochMarker:
    """Reads and moves the marker of the online store under ``prefix`` (any redis-py client)."""

    def __init__(self, client: Any, prefix: str) -> None:
        self.client = client
        self.key = online_epoch_key(prefix)
        self._swap = client.register_script(_SWAP)

    def read(self) -> str | None:
        value = self.client.get(self.key)
        return value.decode() if isinstance(value, bytes) else value

    def claim_rebuild(self, token: str, lease_ms: int) -> bool:
        """Mark the store as being rebuilt by ``token``, only if no marker exists (SET NX)."""
        return bool(self.client.set(self.key, REBUILDING + token, nx=True, px=lease_ms))

    def renew(self, token: str, lease_ms: int) -> bool:
        """Extend our rebuild lease; False if the marker is no longer ours (lost, or taken over)."""
        return bool(self._swap(keys=[self.key], args=[REBUILDING + token, REBUILDING + token, lease_ms]))

    def finish(self, token: str) -> bool:
        """Mark the store whole (no lease); False if the marker is no longer our rebuild's."""
        return bool(self._swap(keys=[self.key], args=[REBUILDING + token, READY + token, ""]))
