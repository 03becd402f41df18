"""Building an aggregation group from its definition and its source group, with every check that
needs the source: the key and each aggregated feature exist, and each function fits its type.

The group it builds is a FeatureGroup like any other (read by every door the same way) whose
features are: the key (typed as in the source), the source's event time (a read answers it with
the read time) and one feature per aggregate, named ``<feature>_<function>_<window>``.
"""

from __future__ import annotations

from dataclasses import replace

from schemas.aggregation import NUMERIC_FUNCTIONS, Aggregate, AggregationSpec, Function
from schemas.errors import DefinitionError
from schemas.group import FeatureGroup
from schemas.types import CollectionType, FeatureDefinition, ScalarType

_NUMBERS = (ScalarType.INTEGRAL, ScalarType.FRACTIONAL)


def output_definition(agg: Aggregate, source_feature: FeatureDefinition) -> FeatureDefinition:
    """The type of an aggregate's value, given the type of the feature it aggregates."""
    name, fn, t = agg.output_name, agg.function, source_feature.type
    if fn in (Function.COUNT, Function.DISTINCT):
        return FeatureDefinition(name, ScalarType.INTEGRAL)
    if fn in (Function.MEAN, Function.STDDEV):
        return FeatureDefinition(name, ScalarType.FRACTIONAL)
    if fn is Function.LAST_N:
        return FeatureDefinition(name, t, CollectionType.LIST)
    return FeatureDefinition(name, t)  # sum, min, max keep the source's number type


def check_against_source(name: str, spec: AggregationSpec, source: FeatureGroup | None) -> None:
    """DefinitionError naming the group, feature and value if ``spec`` does not fit ``source``."""
    if source is None:
        raise DefinitionError(f"feature group {name!r}: source feature group {spec.source!r} does not exist "
                              "(see `featurestream group list`)", group=name, value=spec.source)
    if source.is_aggregation:
        raise DefinitionError(f"feature group {name!r}: source {source.name!r} is itself an aggregation group; "
                              "aggregate the events of a plain feature group", group=name, value=source.name)
    key = source.feature(spec.by) if source.has_feature(spec.by) else None
    if key is None:
        raise DefinitionError(f"feature group {name!r}: aggregation key {spec.by!r} is not a feature of "
                              f"{source.name!r} ({', '.join(source.feature_names[:30])})", group=name,
                              feature=spec.by, value=spec.by)
    if not key.is_scalar or key.type not in (ScalarType.STRING, ScalarType.INTEGRAL):
        raise DefinitionError(f"feature group {name!r}: aggregation key {spec.by!r} is {key.describe()}; it must "
                              "be a scalar String or Integral feature", group=name, feature=spec.by,
                              value=key.describe())
    for agg in spec.aggregates:
        if not source.has_feature(agg.feature):
            raise DefinitionError(f"feature group {name!r}: {agg.function.value} of {agg.feature!r}: "
                                  f"{source.name!r} has no feature {agg.feature!r} "
                                  f"({', '.join(source.feature_names[:30])})", group=name, feature=agg.feature,
                                  value=agg.feature)
        fd = source.feature(agg.feature)
        if not fd.is_scalar:
            raise DefinitionError(f"feature group {name!r}: {agg.function.value} of {agg.feature!r}: it is "
                                  f"{fd.describe()}; only scalar features are aggregated", group=name,
                                  feature=agg.feature, value=fd.describe())
        if agg.function in NUMERIC_FUNCTIONS and fd.type not in _NUMBERS:
            raise DefinitionError(f"feature group {name!r}: {agg.function.value} of {agg.feature!r} needs an "
                                  f"Integral or Fractional feature; {agg.feature!r} is {fd.describe()} (count, "
                                  "last_n and distinct take any scalar)", group=name, feature=agg.feature,
                                  value=fd.describe())


def aggregation_group(name: str, spec: AggregationSpec, source: FeatureGroup | None, *,
                      description: str = "") -> FeatureGroup:
    """The FeatureGroup of aggregation ``spec`` over ``source`` (checked against it)."""
    check_against_source(name, spec, source)
    assert source is not None
    outputs = [output_definition(a, source.feature(a.feature)) for a in spec.aggregates]
    taken = {spec.by, source.event_time_name}
    clash = next((o.name for o in outputs if o.name in taken), None)
    if clash is not None:
        raise DefinitionError(f"feature group {name!r}: aggregate {clash!r} has the name of the key or the event "
                              "time feature", group=name, feature=clash, value=clash)
    spec = replace(spec, types={a.feature: source.feature(a.feature).type.value for a in spec.aggregates})
    features = (source.feature(spec.by), source.event_time, *outputs)
    return FeatureGroup(name=name, record_identifier_name=spec.by, event_time_name=source.event_time_name,
                        features=features, online_enabled=True, offline_enabled=False, partitions=1,
                        description=description, aggregation=spec)


def source_problem(group: FeatureGroup, source: FeatureGroup | None) -> str | None:
    """Why aggregation ``group`` cannot be computed any more, or None: its source group was deleted,
    or deleted and created again (a source created after the aggregation group is not the one its
    state was folded from, and its topic's offsets start again: it is never folded into old state)."""
    spec = group.aggregation
    if spec is None:
        return None
    if source is None:
        return (f"aggregation group {group.name!r} is broken: its source feature group {spec.source!r} was "
                "deleted; its values are no longer served or updated. Delete the aggregation group (and create "
                "it again over a new source)")
    if source.creation_time > group.creation_time:
        return (f"aggregation group {group.name!r} is broken: its source feature group {spec.source!r} was "
                "deleted and created again after it; the new source's events are not folded into the old "
                "state. Delete the aggregation group and create it again (it backfills from the new source)")
    return None
