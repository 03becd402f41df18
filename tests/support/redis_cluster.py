"""A throw-away 3-node Redis Cluster on loopback (real redis-server processes), for tests."""

from __future__ import annotations

import shutil
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis

from featurestream.stack.ports import free_port
from tests.support.wait import wait_for


@contextmanager
def redis_cluster(directory: Path, nodes: int = 3) -> Iterator[str]:
    """Start ``nodes`` cluster-enabled redis-servers (data under ``directory``), join them into one
    cluster covering all slots, yield its ``redis+cluster://`` URL, stop them at the end. Skips the
    test when redis-server or redis-cli is not installed."""
    server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if not server or not cli:
        pytest.skip("redis-server/redis-cli not on PATH: cannot start a Redis Cluster")
    ports: list[int] = []
    while len(ports) < nodes:
        port = free_port()
        # Each node also listens on port + 10000 (the cluster bus): that one must be free too.
        if port <= 55_000 and port not in ports and _port_free(port + 10_000):
            ports.append(port)
    procs = []
    try:
        for port in ports:
            d = directory / f"node{port}"
            d.mkdir(parents=True, exist_ok=True)
            procs.append(subprocess.Popen(
                [server, "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
                 "--cluster-config-file", str(d / "nodes.conf"), "--save", "", "--appendonly", "no",
                 "--dir", str(d)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        for port in ports:
            wait_for(lambda p=port: _pings(p), timeout_s=10.0, what=f"redis-server on port {port} to answer")
        subprocess.run([cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports),
                        "--cluster-replicas", "0", "--cluster-yes"], check=True, timeout=60,
                       capture_output=True)
        wait_for(lambda: all(redis.Redis(host="127.0.0.1", port=p).cluster("info").get("cluster_state") == "ok"
                             for p in ports), timeout_s=20.0, what="the cluster to cover all slots")
        yield f"redis+cluster://127.0.0.1:{ports[0]}"
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=10)


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _pings(port: int) -> bool:
    try:
        return bool(redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.5).ping())
    except redis.ConnectionError:
        return False
