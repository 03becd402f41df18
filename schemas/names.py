"""How featurestream names things: groups and features, Kafka topics, Redis keys, offline paths.

Every name used on a server is built here, so the naming rules live in one place and any
language can reproduce them from docs/wire-format.md.
"""

from __future__ import annotations

import re

from schemas.errors import DefinitionError

# Limits of the reference service (SageMaker Feature Store), kept so code written for it fits.
MAX_FEATURES = 2500
MAX_RECORD_BYTES = 350 * 1024
MAX_VALUE_BYTES = 350 * 1024
MAX_RECORD_ID_BYTES = 2 * 1024
# A record's Kafka message (key + JSON value + headers) may not pass the producer's
# message.max.bytes (librdkafka's default, set explicitly in streams.publisher). A record within
# MAX_RECORD_BYTES can still encode larger (JSON escapes, quotes and commas of long lists), so the
# door checks the encoded size too, and refuses past it with a validation error naming it.
MAX_MESSAGE_BYTES = 1_000_000
MAX_VECTOR_DIMENSION = 8192
MAX_NAME_LENGTH = 64

# Columns the offline store adds to every row; a feature may not take one of these names.
RESERVED_FEATURE_NAMES: frozenset[str] = frozenset({"write_time", "api_invocation_time", "is_deleted"})

_NAME_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9_-]{0,62}[A-Za-z0-9])?")
_NAME_RULE = ("1-64 characters, starting and ending with a letter or digit, with only letters, "
              "digits, '-' and '_' in between")


def name_is_valid(name: object) -> bool:
    """True if ``name`` follows the group/feature naming rule (no exception, for filters)."""
    return isinstance(name, str) and _NAME_RE.fullmatch(name) is not None


def validate_name(name: object, what: str = "feature group", *, group: str | None = None) -> str:
    """Return ``name`` if it is a valid group/feature name, else raise DefinitionError saying why."""
    if not isinstance(name, str):
        raise DefinitionError(
            f"{what} name must be a string of {_NAME_RULE}; got {type(name).__name__} {name!r}",
            group=group, value=name)
    if _NAME_RE.fullmatch(name) is None:
        if not name:
            why = "it is empty"
        elif len(name) > MAX_NAME_LENGTH:
            why = f"it is {len(name)} characters long"
        elif not name[0].isascii() or not name[0].isalnum():
            why = f"it starts with {name[0]!r}"
        elif not name[-1].isascii() or not name[-1].isalnum():
            why = f"it ends with {name[-1]!r}"
        else:
            bad = sorted({c for c in name if not (c.isascii() and (c.isalnum() or c in "-_"))})
            why = f"it contains {', '.join(repr(c) for c in bad)}"
        where = f" in feature group {group!r}" if group else ""
        raise DefinitionError(f"invalid {what} name {name!r}{where}: {why}; a name must be {_NAME_RULE}",
                              group=group, feature=name if what != "feature group" else None, value=name)
    return name


# ---------------------------------------------------------------- Kafka topics

def group_topic(prefix: str, group: str, topic_life: str | None = None) -> str:
    """The topic holding every put/delete of ``group``: ``<prefix>.<group>``, or
    ``<prefix>.<group>._<life>`` for a group created again under a name that had a topic before
    (``FeatureGroup.topic_life``): a topic name is never used by two lives of a group, because a
    running consumer does not notice a topic deleted and created again under its name. The ``_``
    keeps the suffix from reading as a group of a longer prefix (``<prefix>.<group>`` is one), as
    no group name starts with it."""
    return f"{prefix}.{group}" if topic_life is None else f"{prefix}.{group}._{topic_life}"


def registry_topic(prefix: str) -> str:
    """The compacted topic holding feature-group definitions (key = group name)."""
    return f"{prefix}._registry"


def deadletter_topic(prefix: str) -> str:
    """The topic poison messages are copied to, with the reason in headers."""
    return f"{prefix}._deadletter"


def redriven_topic(prefix: str) -> str:
    """The compacted topic where ``deadletter redrive`` records what it re-published (key: the
    dead letter's source record and store, see streams/redrive_plan.py)."""
    return f"{prefix}._deadletter-redriven"


def parse_group_topic(prefix: str, topic: str) -> tuple[str, str | None] | None:
    """``(group, topic_life)`` of a group topic (``topic_life`` None for ``<prefix>.<group>``), or
    None for internal/foreign topics.

    Group names never start with '_' and never contain '.', so internal topics
    (``._registry``) and topics of another prefix never parse as groups.
    """
    head = prefix + "."
    if not topic.startswith(head):
        return None
    rest = topic[len(head):]
    if name_is_valid(rest):
        return rest, None
    name, dot, life = rest.rpartition("._")
    if dot and name_is_valid(name) and life.isascii() and life.isdigit():
        return name, life
    return None


def group_from_topic(prefix: str, topic: str) -> str | None:
    """The group whose topic (of any of its lives) is ``topic``, or None for internal/foreign topics."""
    parsed = parse_group_topic(prefix, topic)
    return None if parsed is None else parsed[0]


# ---------------------------------------------------------------- Redis keys

def online_key(prefix: str, group: str, record_id: str) -> str:
    """Redis key of one record. No hash tag: records of a group spread over a Redis Cluster."""
    return f"{prefix}:{group}:{record_id}"


def aggregate_key(prefix: str, group: str, key: str) -> str:
    """Redis key of one aggregation key's tiles. The hash tag holds the group and the key, so the
    key's hash and its distinct-count sketches share a slot (one script touches them all) while the
    keys of one group still spread over every slot: there is no group-wide tag. The group inside the
    tag keeps it non-empty whatever the key's text is."""
    return f"{prefix}:{group}:{{{group}:{key}}}"


_GLOB_SPECIAL = re.compile(r"([*?\[\]\\])")


def _glob_escape(text: str) -> str:
    return _GLOB_SPECIAL.sub(r"\\\1", text)


def online_epoch_key(prefix: str) -> str:
    """Redis key of the online store's epoch marker (sinks/online/epoch.py). Group names start
    with a letter or digit, so no record key can take this name."""
    return f"{prefix}:__online_epoch"


def online_key_pattern(prefix: str, group: str) -> str:
    """SCAN MATCH pattern for every record key of ``group`` (glob characters escaped)."""
    return f"{_glob_escape(prefix)}:{_glob_escape(group)}:*"


def record_id_from_key(prefix: str, group: str, key: str | bytes) -> str | None:
    """Inverse of :func:`online_key`, or None if ``key`` is not a record key of ``group``."""
    if isinstance(key, bytes):
        key = key.decode("utf-8", "surrogateescape")
    head = f"{prefix}:{group}:"
    return key[len(head):] if key.startswith(head) else None


# ---------------------------------------------------------------- offline layout

def offline_table_uri(offline_uri: str, group: str, creation_epoch: int) -> str:
    """Root of a group's offline table; the creation epoch keeps a re-created group's files apart."""
    return f"{offline_uri.rstrip('/')}/{group}-{int(creation_epoch)}"


def partition_field_name(event_time_name: str) -> str:
    """Name of the offline table's partition field, ``day(<event time>)``. Iceberg refuses a
    partition field named like a column (pyiceberg raises "Cannot create partition with a name that
    exists in schema", at creation and when an update adds the column), so a group with an offline
    store cannot have a feature of this name (compared case-insensitively, as SQL engines do)."""
    return f"{event_time_name}_day"
