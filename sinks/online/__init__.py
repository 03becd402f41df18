"""Redis online store: the latest record per identifier, written only if newer (see README.md)."""

from sinks.online.connect import connect, parse_redis_url, redact_url
from sinks.online.errors import CorruptRecordError, RedisUrlError
from sinks.online.results import BatchGetResult, BatchResult, FoundRecord, RecordError
from sinks.online.status import WriteStatus
from sinks.online.store import MAX_IDS_PER_GROUP, OnlineStore

__all__ = [
    "MAX_IDS_PER_GROUP",
    "BatchGetResult",
    "BatchResult",
    "CorruptRecordError",
    "FoundRecord",
    "OnlineStore",
    "RecordError",
    "RedisUrlError",
    "WriteStatus",
    "connect",
    "parse_redis_url",
    "redact_url",
]
