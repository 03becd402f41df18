"""The Kafka ``client.id`` of featurestream's long-running workers, and reading it back.

Every processor and sink names its consumer ``featurestream-<role>-<host>-<pid>``, so a consumer
group's members (``featurestream status``, the broker's logs and quotas, `kafka-consumer-groups
--describe`) say which worker holds which partitions: the host (in Kubernetes, the pod name), the
process and its role.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

PREFIX = "featurestream-"
ROLES = ("processor", "sink")


@dataclass(frozen=True)
class WorkerClientId:
    role: str
    host: str
    pid: int


def worker_client_id(role: str, *, host: str | None = None, pid: int | None = None) -> str:
    """``featurestream-<role>-<host>-<pid>`` for this process (or the ``host``/``pid`` given)."""
    if role not in ROLES:
        raise ValueError(f"a worker's role must be one of {', '.join(ROLES)}; got {role!r}")
    return f"{PREFIX}{role}-{host or socket.gethostname()}-{os.getpid() if pid is None else pid}"


def parse_worker_client_id(client_id: str) -> WorkerClientId | None:
    """The role, host and pid a worker's client id names; None for any other client (a tool, an
    older featurestream, another application)."""
    if not client_id.startswith(PREFIX):
        return None
    role, _, rest = client_id.removeprefix(PREFIX).partition("-")
    host, _, pid = rest.rpartition("-")  # host names may hold '-', the pid never does
    if role not in ROLES or not host or not pid.isdigit():
        return None
    return WorkerClientId(role, host, int(pid))
