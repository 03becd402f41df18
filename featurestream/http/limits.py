"""How much one request may cost the server: the settings of ``featurestream serve`` that bound it.

Each bound answers one way a single client could hold a worker: a huge body (memory), a body
that never finishes arriving (a connection and a handler held forever), many bodies arriving at
once (memory again: 150 half-sent 2 MiB bodies), a response far larger than its request
(BatchGetRecord names up to 100 x 100 records: 3.5 GB of 350 KB ones), and a Redis that stops
answering (threads held by reads that never return).
"""

from __future__ import annotations

from dataclasses import dataclass

MiB = 1024 * 1024
DEFAULT_MAX_BODY_BYTES = 2 * MiB  # > a 350 KB record times BatchWriteRecord's 25... in text form, bounded
# DynamoDB's BatchGetItem answers at most 16 MB and returns the rest as UnprocessedKeys: the same
# bound, the same remedy. It holds ~45 records of the largest size, thousands of ordinary ones.
DEFAULT_MAX_RESPONSE_BYTES = 16 * MiB
DEFAULT_BODY_TIMEOUT_S = 30.0  # 2 MiB in 30 s is 70 KB/s: slower than any client worth waiting for
# Bytes of request bodies a worker receives at once: 8 bodies of the largest size, or thousands of
# ordinary records (a PutRecord of 20 features is ~2 KB). Beyond it a request is refused at once.
DEFAULT_MAX_BODY_IN_FLIGHT_BYTES = 16 * MiB
# A Redis read takes well under a millisecond; one that takes a second is not coming. redis-py
# retries once, so a stalled server fails a read in about twice this.
DEFAULT_REDIS_TIMEOUT_S = 1.0
MIN_REDIS_TIMEOUT_S = 0.05
MIN_MAX_BODY_BYTES = 1024
# A response must hold at least one record of the largest size (350 KB, which JSON escaping can
# grow several times), so a client re-asking for its unprocessed identifiers always progresses.
MIN_MAX_RESPONSE_BYTES = 1 * MiB
MIN_BODY_TIMEOUT_S = 0.1


class LimitsError(ValueError):
    """A limit set out of its range; the message names the setting and the range."""


@dataclass(frozen=True)
class Limits:
    """``max_body_bytes``: largest request body (413 beyond). ``max_response_bytes``: the most a
    BatchGetRecord answer holds; the identifiers that do not fit come back as
    ``UnprocessedIdentifiers``. ``body_timeout_s``: the time a client has to send its whole body
    once its headers arrived (408 and the connection closed after). ``max_body_in_flight_bytes``:
    the bytes of bodies one worker receives at once (each request counts its Content-Length, or
    ``max_body_bytes`` when chunked); a request that would pass it is refused (503
    ThrottlingException) before its body is read. At least ``max_body_bytes``, so that any
    acceptable body can be received. ``redis_timeout_s``: the socket timeout of the server's Redis
    client (reads fail ServiceUnavailable after it)."""

    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES
    body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S
    max_body_in_flight_bytes: int = DEFAULT_MAX_BODY_IN_FLIGHT_BYTES
    redis_timeout_s: float = DEFAULT_REDIS_TIMEOUT_S

    def __post_init__(self) -> None:
        for name, value, low in (("max_body_bytes", self.max_body_bytes, MIN_MAX_BODY_BYTES),
                                 ("max_response_bytes", self.max_response_bytes, MIN_MAX_RESPONSE_BYTES),
                                 ("body_timeout_s", self.body_timeout_s, MIN_BODY_TIMEOUT_S),
                                 ("max_body_in_flight_bytes", self.max_body_in_flight_bytes, self.max_body_bytes),
                                 ("redis_timeout_s", self.redis_timeout_s, MIN_REDIS_TIMEOUT_S)):
            if value < low:
                raise LimitsError(f"{name} must be at least {low}" +
                                  (" (max_body_bytes)" if name == "max_body_in_flight_bytes" else "") +
                                  f"; got {value}")


__all__ = ["DEFAULT_BODY_TIMEOUT_S", "DEFAULT_MAX_BODY_BYTES", "DEFAULT_MAX_BODY_IN_FLIGHT_BYTES",
           "DEFAULT_MAX_RESPONSE_BYTES", "DEFAULT_REDIS_TIMEOUT_S", "Limits", "LimitsError"]
