"""The feature-group model: its definition, validated once when built, and its JSON form.

A FeatureGroup that exists is valid: every rule of the contract is checked in
``__post_init__`` so no other module has to re-check a definition.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from schemas.aggregation import AggregationSpec
from schemas.errors import DefinitionError, RecordValidationError
from schemas.names import (
    MAX_FEATURES,
    RESERVED_FEATURE_NAMES,
    group_topic,
    partition_field_name,
    validate_name,
)
from schemas.ttl import Ttl
from schemas.types import FeatureDefinition, ScalarType

MAX_PARTITIONS = 10_000
MAX_DESCRIPTION_CHARS = 128
DICT_FORMAT = 1  # version of the to_dict() layout, stored in the registry


def _as_definition(item: Any, group: str) -> FeatureDefinition:
    if isinstance(item, FeatureDefinition):
        return item
    if isinstance(item, dict):
        try:
            return FeatureDefinition.from_api(item)
        except DefinitionError as exc:
            raise DefinitionError(f"feature group {group!r}: {exc}", group=group,
                                  feature=exc.feature, value=exc.value) from None
    raise DefinitionError(
        f"feature group {group!r}: features must be FeatureDefinition objects or "
        f'{{"FeatureName": ..., "FeatureType": ...}} dicts; got {type(item).__name__} {item!r}',
        group=group, value=item)


def _int_field(group: str, what: str, value: object, low: int, high: int | None, hint: str) -> None:
    if type(value) is not int or value < low or (high is not None and value > high):
        raise DefinitionError(f"feature group {group!r}: {what} must be {hint}; got {value!r}",
                              group=group, value=value)


@dataclass(frozen=True)
class FeatureGroup:
    name: str
    record_identifier_name: str
    event_time_name: str
    features: tuple[FeatureDefinition, ...]
    online_enabled: bool = True
    offline_enabled: bool = True
    offline_uri: str | None = None  # resolved table location (offline_table_uri) or None
    ttl: Ttl | None = None
    partitions: int = 3
    replication_factor: int = 1
    retention_ms: int = -1
    description: str = ""
    creation_time: float = 0.0  # epoch seconds
    version: int = 1
    extra: dict[str, Any] = field(default_factory=dict)  # accepted and kept (RoleArn, Tags, ...)
    # Set on an aggregation group: its features are computed from a source group's events
    # (schemas/aggregation_group.py builds one), and nothing may be written to it.
    aggregation: AggregationSpec | None = None
    # Set by the registry when the group is created under a name that had a topic before: its
    # topic is then ``<prefix>.<name>._<topic_life>`` (schemas.names.group_topic), never the name a
    # deleted life used. None: ``<prefix>.<name>``.
    topic_life: str | None = None

    def __post_init__(self) -> None:
        name = validate_name(self.name, "feature group")
        if not isinstance(self.features, (list, tuple)):
            raise DefinitionError(f"feature group {name!r}: features must be a list of feature "
                                  f"definitions; got {type(self.features).__name__}", group=name)
        feats = tuple(_as_definition(f, name) for f in self.features)
        object.__setattr__(self, "features", feats)
        if not feats:
            raise DefinitionError(f"feature group {name!r} has no features; it needs at least the "
                                  "record identifier and the event time", group=name)
        if len(feats) > MAX_FEATURES:
            raise DefinitionError(f"feature group {name!r} has {len(feats)} features; at most "
                                  f"{MAX_FEATURES} are allowed", group=name, value=len(feats))
        seen: dict[str, str] = {}
        for f in feats:
            low = f.name.lower()
            if low in RESERVED_FEATURE_NAMES:
                raise DefinitionError(
                    f"feature group {name!r}: feature name {f.name!r} is reserved (the offline store "
                    f"adds {', '.join(sorted(RESERVED_FEATURE_NAMES))}); rename the feature",
                    group=name, feature=f.name, value=f.name)
            if self.offline_enabled and low == partition_field_name(self.event_time_name).lower():
                raise DefinitionError(
                    f"feature group {name!r}: feature name {f.name!r} is the name of the offline table's "
                    f"partition field, day({self.event_time_name}) (Iceberg forbids a column named like it); "
                    f"rename it (e.g. {f.name}_value) or disable the offline store", group=name,
                    feature=f.name, value=f.name)
            if low in seen:
                same = "twice" if seen[low] == f.name else f"twice ({seen[low]!r} and {f.name!r}: " \
                    "SQL engines treat column names case-insensitively)"
                raise DefinitionError(f"feature group {name!r}: feature {f.name!r} is defined {same}",
                                      group=name, feature=f.name, value=f.name)
            seen[low] = f.name
        by_name = {f.name: f for f in feats}
        rid = by_name.get(self.record_identifier_name) if isinstance(self.record_identifier_name, str) else None
        if rid is None:
            raise DefinitionError(
                f"feature group {name!r}: record identifier {self.record_identifier_name!r} is not one "
                f"of its features ({_names(feats)})", group=name, value=self.record_identifier_name)
        if not rid.is_scalar or rid.type not in (ScalarType.STRING, ScalarType.INTEGRAL):
            raise DefinitionError(
                f"feature group {name!r}: record identifier {rid.name!r} is {rid.describe()}; it must "
                "be a scalar String or Integral feature", group=name, feature=rid.name, value=rid.describe())
        et = by_name.get(self.event_time_name) if isinstance(self.event_time_name, str) else None
        if et is None:
            raise DefinitionError(
                f"feature group {name!r}: event time feature {self.event_time_name!r} is not one of its "
                f"features ({_names(feats)})", group=name, value=self.event_time_name)
        if not et.is_scalar or et.type not in (ScalarType.STRING, ScalarType.FRACTIONAL):
            raise DefinitionError(
                f"feature group {name!r}: event time feature {et.name!r} is {et.describe()}; it must be "
                "a scalar String (ISO-8601) or Fractional (epoch seconds) feature",
                group=name, feature=et.name, value=et.describe())
        if et.name == rid.name:
            raise DefinitionError(f"feature group {name!r}: the record identifier and the event time "
                                  f"must be different features (both are {rid.name!r})", group=name)
        for what in ("online_enabled", "offline_enabled"):
            if type(getattr(self, what)) is not bool:
                raise DefinitionError(f"feature group {name!r}: {what} must be true or false; got "
                                      f"{getattr(self, what)!r}", group=name, value=getattr(self, what))
        if not (self.online_enabled or self.offline_enabled):
            raise DefinitionError(f"feature group {name!r}: enable the online store, the offline store "
                                  "or both", group=name)
        if self.offline_uri is not None and (not isinstance(self.offline_uri, str) or not self.offline_uri):
            raise DefinitionError(f"feature group {name!r}: offline_uri must be a non-empty string or "
                                  f"None; got {self.offline_uri!r}", group=name, value=self.offline_uri)
        if isinstance(self.ttl, dict):
            object.__setattr__(self, "ttl", Ttl.from_api(self.ttl))
        elif self.ttl is not None and not isinstance(self.ttl, Ttl):
            raise DefinitionError(f"feature group {name!r}: ttl must be a Ttl or None; got {self.ttl!r}",
                                  group=name, value=self.ttl)
        _int_field(name, "partitions", self.partitions, 1, MAX_PARTITIONS, f"an integer from 1 to {MAX_PARTITIONS}")
        _int_field(name, "replication_factor", self.replication_factor, 1, 32, "an integer from 1 to 32")
        if type(self.retention_ms) is not int or not (self.retention_ms == -1 or self.retention_ms > 0):
            raise DefinitionError(f"feature group {name!r}: retention_ms must be -1 (keep forever) or a "
                                  f"positive integer; got {self.retention_ms!r}", group=name,
                                  value=self.retention_ms)
        if not isinstance(self.description, str) or len(self.description) > MAX_DESCRIPTION_CHARS:
            raise DefinitionError(f"feature group {name!r}: description must be text of at most "
                                  f"{MAX_DESCRIPTION_CHARS} characters; got {_short(self.description)}",
                                  group=name, value=self.description)
        ct = self.creation_time
        if type(ct) is int:
            object.__setattr__(self, "creation_time", float(ct))
        elif type(ct) is not float or not 0.0 <= ct < 253_402_300_800.0:
            raise DefinitionError(f"feature group {name!r}: creation_time must be epoch seconds "
                                  f"(a number from 0); got {ct!r}", group=name, value=ct)
        _int_field(name, "version", self.version, 1, None, "a positive integer")
        tl = self.topic_life
        if tl is not None and not (isinstance(tl, str) and 0 < len(tl) <= 20 and tl.isascii() and tl.isdigit()):
            raise DefinitionError(f"feature group {name!r}: topic_life must be None or 1-20 decimal digits; "
                                  f"got {_short(tl)}", group=name, value=tl)
        if not isinstance(self.extra, dict) or not all(isinstance(k, str) for k in self.extra):
            raise DefinitionError(f"feature group {name!r}: extra must be a dict with string keys; got "
                                  f"{_short(self.extra)}", group=name, value=self.extra)
        if isinstance(self.aggregation, dict):
            object.__setattr__(self, "aggregation", AggregationSpec.from_dict(self.aggregation, group=name))
        if self.aggregation is not None:
            _check_aggregation(self, by_name)
        # Cached lookups; object.__setattr__ because the dataclass is frozen.
        object.__setattr__(self, "_by_name", by_name)

    # ------------------------------------------------------------ queries

    def feature(self, name: str) -> FeatureDefinition:
        """The definition of feature ``name``; RecordValidationError naming the valid ones if unknown."""
        found = self._by_name.get(name)  # type: ignore[attr-defined]
        if found is None:
            raise RecordValidationError(
                f"feature group {self.name!r} has no feature {name!r}; its features are "
                f"{_names(self.features)}", group=self.name, feature=name if isinstance(name, str) else None,
                value=name)
        return found

    def has_feature(self, name: str) -> bool:
        return name in self._by_name  # type: ignore[attr-defined]

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.features)

    @property
    def record_identifier(self) -> FeatureDefinition:
        return self._by_name[self.record_identifier_name]  # type: ignore[attr-defined]

    @property
    def event_time(self) -> FeatureDefinition:
        return self._by_name[self.event_time_name]  # type: ignore[attr-defined]

    @property
    def creation_epoch(self) -> int:
        return int(self.creation_time)

    @property
    def life(self) -> str:
        """Which life of this name the group is: its creation time in whole microseconds, as decimal
        text. A group deleted and created again under its name has the same online keys; the
        online store's scripts and reads tell the lives apart by this (write_if_newer.lua and
        aggregate_fold.lua, "Lives")."""
        return str(round(self.creation_time * 1_000_000))

    def topic(self, prefix: str) -> str:
        """The Kafka topic of this life of the group (an aggregation group has none: nothing is
        written to it, see ``aggregation.source``)."""
        return group_topic(prefix, self.name, self.topic_life)

    @property
    def is_aggregation(self) -> bool:
        """Whether this group's features are aggregates of another group's events (read-only)."""
        return self.aggregation is not None

    @property
    def enabled_stores(self) -> frozenset[str]:
        from schemas.messages import OFFLINE, ONLINE

        stores = set()
        if self.online_enabled:
            stores.add(ONLINE)
        if self.offline_enabled:
            stores.add(OFFLINE)
        return frozenset(stores)

    # ------------------------------------------------------------ evolution

    def with_added_features(self, defs: Iterable[FeatureDefinition | dict[str, Any]]) -> FeatureGroup:
        """A new version with ``defs`` appended. Existing features can never change or go away,
        because records already in the topic and the offline files were written with them."""
        new = tuple(_as_definition(d, self.name) for d in defs)
        if not new:
            raise DefinitionError(f"feature group {self.name!r}: no features to add", group=self.name)
        for d in new:
            old = self._by_name.get(d.name)  # type: ignore[attr-defined]
            if old is not None:
                change = "is already defined" if old == d else \
                    f"is already defined as {old.describe()}; existing features cannot be changed"
                raise DefinitionError(f"feature group {self.name!r}: feature {d.name!r} {change}",
                                      group=self.name, feature=d.name, value=d.describe())
        return replace(self, features=self.features + new, version=self.version + 1)

    def with_ttl(self, ttl: Ttl | None) -> FeatureGroup:
        return replace(self, ttl=ttl, version=self.version + 1)

    # ------------------------------------------------------------ JSON form (registry)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": DICT_FORMAT,
            "name": self.name,
            "record_identifier_name": self.record_identifier_name,
            "event_time_name": self.event_time_name,
            "features": [f.to_api() for f in self.features],
            "online_enabled": self.online_enabled,
            "offline_enabled": self.offline_enabled,
            "offline_uri": self.offline_uri,
            "ttl": self.ttl.to_api() if self.ttl else None,
            "partitions": self.partitions,
            "replication_factor": self.replication_factor,
            "retention_ms": self.retention_ms,
            "description": self.description,
            "creation_time": self.creation_time,
            "version": self.version,
            "extra": dict(self.extra),
            # Only on aggregation groups, so plain groups' registry entries keep their old form.
            **({"aggregation": self.aggregation.to_dict()} if self.aggregation is not None else {}),
            # Only when set, for the same reason.
            **({"topic_life": self.topic_life} if self.topic_life is not None else {}),
        }

    @classmethod
    def from_dict(cls, d: Any) -> FeatureGroup:
        """Inverse of :meth:`to_dict`. Unknown keys are ignored (a newer writer may add some)."""
        if not isinstance(d, dict):
            raise DefinitionError(f"a feature group definition must be a JSON object; got {_short(d)}", value=d)
        group = d.get("name")
        missing = [k for k in ("name", "record_identifier_name", "event_time_name", "features") if k not in d]
        if missing:
            raise DefinitionError(f"feature group definition {group!r} lacks {', '.join(missing)}",
                                  group=group if isinstance(group, str) else None, value=d)
        kwargs: dict[str, Any] = {k: d[k] for k in _FIELDS if k in d and k != "ttl"}
        if d.get("ttl") is not None:
            kwargs["ttl"] = Ttl.from_api(d["ttl"])
        if kwargs.get("extra") is None:
            kwargs.pop("extra", None)
        if d.get("aggregation") is not None:
            kwargs["aggregation"] = AggregationSpec.from_dict(d["aggregation"], group=group)
        return cls(**kwargs)


_FIELDS = ("name", "record_identifier_name", "event_time_name", "features", "online_enabled",
           "offline_enabled", "offline_uri", "ttl", "partitions", "replication_factor", "retention_ms",
           "description", "creation_time", "version", "extra", "topic_life")


def _check_aggregation(group: FeatureGroup, by_name: dict[str, FeatureDefinition]) -> None:
    """An aggregation group's own shape (its fit to the source is checked when it is built)."""
    spec = group.aggregation
    if not isinstance(spec, AggregationSpec):
        raise DefinitionError(f"feature group {group.name!r}: aggregation must be an AggregationSpec or its "
                              f"JSON form; got {_short(spec)}", group=group.name, value=spec)
    if spec.source == group.name:
        raise DefinitionError(f"feature group {group.name!r} cannot aggregate its own events", group=group.name,
                              value=spec.source)
    if spec.by != group.record_identifier_name:
        raise DefinitionError(f"feature group {group.name!r}: its record identifier must be the aggregation key "
                              f"{spec.by!r}; got {group.record_identifier_name!r}", group=group.name,
                              value=group.record_identifier_name)
    missing = [a.output_name for a in spec.aggregates if a.output_name not in by_name]
    if missing:
        raise DefinitionError(f"feature group {group.name!r}: aggregates {', '.join(missing)} have no feature "
                              "definition (build aggregation groups with schemas.aggregation_group)",
                              group=group.name, value=missing)
    if group.offline_enabled or not group.online_enabled:
        raise DefinitionError(f"feature group {group.name!r}: an aggregation group is served by the online store "
                              "only (its point-in-time values come from the source's offline table)",
                              group=group.name)


def _names(feats: Iterable[FeatureDefinition], limit: int = 20) -> str:
    names = [f.name for f in feats]
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def _short(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} chars)"
