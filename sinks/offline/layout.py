"""Where a row's file goes and what files are called: the offline table layout.

    <table>/data/year=YYYY/month=MM/day=DD/hour=HH/<topic>+<partition:05d>+<first:020d>.parquet
    <table>/data/year=.../compacted-<uuid>.parquet      (live only with its manifest)
    <table>/_manifests/<uuid>.json                     (compaction commit records)

A data file's identity is ``topic+partition+first offset`` only; the last offset lives in the
Parquet key-value metadata (see partition_writer.py for why it must not be in the name).
Names starting with '_' or '.' are never data: temp files, manifests, in-progress writes.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

from schemas.names import data_file_name, partition_path
from sinks.offline.errors import OfflineLayoutError

DATA_DIR = "data"
MANIFEST_DIR = "_manifests"
COMPACTED_PREFIX = "compacted-"

# Parquet key-value metadata written into every file (bytes keys, as Parquet wants).
META_TOPIC = b"featurestream.kafka_topic"
META_PARTITION = b"featurestream.kafka_partition"
META_FIRST = b"featurestream.first_offset"
META_LAST = b"featurestream.last_offset"
META_COMPACTION = b"featurestream.compaction_id"

_DATA_NAME = re.compile(r"(?P<topic>[A-Za-z0-9._-]+)\+(?P<partition>\d{5,})\+(?P<first>\d{20})\.parquet")
_COMPACTED_NAME = re.compile(r"compacted-(?P<id>[0-9a-f]{32})\.parquet")
_HOUR_DIR = re.compile(r"year=\d{4}/month=\d{2}/day=\d{2}/hour=\d{2}")


@dataclass(frozen=True, slots=True)
class DataFileName:
    topic: str
    partition: int
    first_offset: int


def data_root(table_path: str) -> str:
    return f"{table_path.rstrip('/')}/{DATA_DIR}"


def manifest_root(table_path: str) -> str:
    return f"{table_path.rstrip('/')}/{MANIFEST_DIR}"


def hour_dir(table_path: str, event_time_ns: int) -> str:
    return f"{data_root(table_path)}/{partition_path(event_time_ns)}"


def data_file_path(table_path: str, hour: str, topic: str, partition: int, first_offset: int) -> str:
    """Path of the file holding one batch's rows of one hour, named by its Kafka coordinates."""
    return f"{data_root(table_path)}/{hour}/{data_file_name(topic, partition, first_offset)}"


def new_compaction_id() -> str:
    return uuid.uuid4().hex


def compacted_file_path(hour_directory: str, compaction_id: str) -> str:
    return f"{hour_directory.rstrip('/')}/{COMPACTED_PREFIX}{compaction_id}.parquet"


def manifest_path(table_path: str, compaction_id: str) -> str:
    return f"{manifest_root(table_path)}/{compaction_id}.json"


def basename(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1]


def is_hidden(path: str) -> bool:
    """True for temp/in-progress names ('.' or '_' prefix, in the file or any folder)."""
    return any(part.startswith((".", "_")) for part in path.split("/") if part)


def parse_data_file_name(name: str) -> DataFileName | None:
    """Kafka coordinates of a writer file name, or None if it is not one."""
    m = _DATA_NAME.fullmatch(basename(name))
    if m is None:
        return None
    return DataFileName(m["topic"], int(m["partition"]), int(m["first"]))


def compaction_id_of(name: str) -> str | None:
    """The compaction id in a ``compacted-<id>.parquet`` name, or None."""
    m = _COMPACTED_NAME.fullmatch(basename(name))
    return m["id"] if m else None


def hour_partition_of(path: str) -> str:
    """``year=../month=../day=../hour=..`` of a data file path; OfflineLayoutError if it has none."""
    m = _HOUR_DIR.search(path)
    if m is None:
        raise OfflineLayoutError(f"{path!r} is not inside a year=YYYY/month=MM/day=DD/hour=HH partition")
    return m.group(0)
