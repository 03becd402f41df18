"""Open a Redis client from a URL: plain, TLS, AUTH, or Redis Cluster.

URL forms (documented in README.md):
  redis://[user:password@]host:port[/db]        one Redis server
  rediss://...                                  the same over TLS
  redis+cluster://[user:password@]host:port     Redis Cluster; host:port is any seed node
  rediss+cluster://...                          Redis Cluster over TLS
  ...?cluster=true                              also selects Redis Cluster
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.cluster
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialBackoff
from redis.exceptions import RedisClusterException
from redis.retry import Retry

from schemas.errors import ServiceUnavailableError
from sinks.online.errors import RedisUrlError

DEFAULT_TIMEOUT_S = 2.0
_SCHEMES = {"redis", "rediss", "redis+cluster", "rediss+cluster"}
_TRUE = {"1", "true", "yes", "on"}

RedisClient = redis.Redis | redis.cluster.RedisCluster
AsyncRedisClient = redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster


@dataclass(frozen=True)
class RedisTarget:
    """A parsed Redis URL: the URL redis-py understands and whether it is a cluster."""

    url: str
    cluster: bool


def redact_url(url: str) -> str:
    """The URL with any password replaced by ``***`` (for error messages and logs)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def parse_redis_url(url: str) -> RedisTarget:
    """Validate ``url`` and tell a cluster URL from a single-server one (pure, no I/O)."""
    if not isinstance(url, str) or not url:
        raise RedisUrlError(f"Redis URL must be a non-empty string like redis://127.0.0.1:6379/0; got {url!r}")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a non-numeric port
    except ValueError as exc:
        raise RedisUrlError(f"invalid Redis URL {redact_url(url)!r}: {exc}") from None
    if parts.scheme not in _SCHEMES:
        raise RedisUrlError(f"invalid Redis URL {redact_url(url)!r}: scheme {parts.scheme!r} is not one of "
                         f"{', '.join(sorted(_SCHEMES))}")
    if not parts.hostname:
        raise RedisUrlError(f"invalid Redis URL {redact_url(url)!r}: no host; expected e.g. "
                         f"redis://127.0.0.1:6379/0")
    query = parse_qsl(parts.query, keep_blank_values=True)
    cluster = parts.scheme.endswith("+cluster")
    kept = []
    for name, value in query:
        if name == "cluster":
            cluster = cluster or value.lower() in _TRUE
        else:
            kept.append((name, value))
    scheme = parts.scheme.removesuffix("+cluster")
    plain = urlunsplit(parts._replace(scheme=scheme, query=urlencode(kept)))
    return RedisTarget(url=plain, cluster=cluster)


def connect(url: str, *, timeout_s: float = DEFAULT_TIMEOUT_S, check: bool = True) -> RedisClient:
    """A redis-py client for ``url`` with bounded timeouts.

    With ``check`` the server is pinged now, so a wrong URL or a server that is down fails
    here with ServiceUnavailableError (naming the URL, password hidden) rather than later.
    """
    target = parse_redis_url(url)
    # Few, short retries: a caller waiting on a dead server should hear about it in seconds.
    retry = Retry(ExponentialBackoff(cap=0.2, base=0.05), retries=1)
    options = dict(socket_timeout=timeout_s, socket_connect_timeout=timeout_s, retry=retry)
    try:
        if target.cluster:
            client: RedisClient = redis.cluster.RedisCluster.from_url(target.url, **options)
        else:
            client = redis.Redis.from_url(target.url, **options)
        if check:
            client.ping()
    except redis.AuthenticationError as exc:  # a ConnectionError subclass: catch it first
        raise ServiceUnavailableError(
            f"Redis at {redact_url(url)} refused the credentials in the URL ({exc})") from exc
    except (redis.ConnectionError, redis.TimeoutError, RedisClusterException) as exc:
        raise ServiceUnavailableError(
            f"Redis at {redact_url(url)} did not answer within {timeout_s:g}s ({exc}). Is it running? "
            f"Start the local stack with `eval \"$(featurestream up)\"` or set FEATURESTREAM_REDIS_URL"
        ) from exc
    return client


def connect_async(url: str, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> AsyncRedisClient:
    """A redis-py asyncio client for ``url``, with the same URL forms, timeouts and retry as
    :func:`connect`. Nothing is sent yet: it connects on first use, in the event loop that uses it
    (an asyncio connection belongs to one loop), and a server that is down is then reported as
    ``redis.ConnectionError``/``TimeoutError`` within the timeout."""
    target = parse_redis_url(url)
    retry = AsyncRetry(ExponentialBackoff(cap=0.2, base=0.05), retries=1)
    options = dict(socket_timeout=timeout_s, socket_connect_timeout=timeout_s, retry=retry)
    if target.cluster:
        return redis.asyncio.cluster.RedisCluster.from_url(target.url, **options)
    return redis.asyncio.Redis.from_url(target.url, **options)
