import orjson
import pytest

from schemas.errors import DefinitionError, RecordValidationError
from schemas.group import FeatureGroup
from schemas.ttl import Ttl
from schemas.types import FeatureDefinition as F


def make(**kw):
    base = dict(name="customers", record_identifier_name="id", event_time_name="et",
                features=(F("id", "String"), F("et", "String"), F("age", "Integral")))
    base.update(kw)
    return FeatureGroup(**base)


def test_round_trip_through_json():
    g = make(ttl=Ttl(7, "Days"), offline_uri="s3://b/customers-1", description="d", creation_time=1633176000.5,
             extra={"RoleArn": "arn:x", "Tags": [{"Key": "a", "Value": "b"}]},
             features=(F("id", "Integral"), F("et", "Fractional"), F("v", "Fractional", "Vector", 4)))
    d = orjson.loads(orjson.dumps(g.to_dict()))
    assert FeatureGroup.from_dict(d) == g
    assert g.creation_epoch == 1633176000
    assert g.feature_names == ("id", "et", "v")


def test_from_dict_accepts_api_feature_dicts_and_ignores_unknown_keys():
    d = make().to_dict()
    d["some_future_field"] = 1
    assert FeatureGroup.from_dict(d) == make()


@pytest.mark.parametrize("bad,match", [
    ([], "JSON object"),
    ({"name": "g"}, "lacks record_identifier_name"),
])
def test_from_dict_rejects(bad, match):
    with pytest.raises(DefinitionError, match=match):
        FeatureGroup.from_dict(bad)


@pytest.mark.parametrize("kw,match", [
    (dict(name="_x"), "invalid feature group name"),
    (dict(features=()), "no features"),
    (dict(features=[F("id", "String"), F("et", "String"), F("write_time", "String")]), "reserved"),
    (dict(features=[F("id", "String"), F("et", "String"), F("Is_Deleted", "String")]), "reserved"),
    (dict(features=[F("id", "String"), F("et", "String"), F("ET_day", "Integral")]), "partition field, day\\(et\\)"),
    (dict(features=[F("id", "String"), F("et", "String"), F("et", "String")]), "defined twice"),
    (dict(features=[F("id", "String"), F("et", "String"), F("ET", "String")]), "case-insensitively"),
    (dict(record_identifier_name="nope"), "record identifier 'nope' is not one of its features"),
    (dict(event_time_name="nope"), "event time feature 'nope' is not one"),
    (dict(features=[F("id", "Fractional"), F("et", "String")]), "scalar String or Integral"),
    (dict(features=[F("id", "String", "List"), F("et", "String")]), "scalar String or Integral"),
    (dict(features=[F("id", "String"), F("et", "Integral")]), "String \\(ISO-8601\\) or Fractional"),
    (dict(event_time_name="id"), "must be different"),
    (dict(online_enabled=False, offline_enabled=False), "enable the online store"),
    (dict(online_enabled="yes"), "true or false"),
    (dict(partitions=0), "partitions"),
    (dict(partitions=True), "partitions"),
    (dict(replication_factor=0), "replication_factor"),
    (dict(retention_ms=0), "retention_ms"),
    (dict(description="x" * 129), "description"),
    (dict(creation_time=-1.0), "creation_time"),
    (dict(creation_time=float("nan")), "creation_time"),
    (dict(version=0), "version"),
    (dict(ttl="7d"), "ttl must be a Ttl"),
    (dict(offline_uri=""), "offline_uri"),
    (dict(extra={1: 2}), "extra"),
    (dict(features=["id"]), "FeatureDefinition objects"),
    (dict(features=[{"FeatureName": "id"}]), "no FeatureType"),
])
def test_invalid_groups(kw, match):
    with pytest.raises(DefinitionError, match=match) as exc:
        make(**kw)
    assert exc.value.group in (None, kw.get("name", "customers"))


def test_partition_field_name_allowed_without_offline_store():
    g = make(offline_enabled=False, features=(F("id", "String"), F("et", "String"), F("et_day", "Integral")))
    assert g.feature("et_day").type == "Integral"


def test_hive_partition_names_are_ordinary_features():
    """The tables are Iceberg, partitioned by a hidden day(event time): year/month/day/hour are free."""
    g = make(features=(F("id", "String"), F("et", "String"), *(F(n, "Integral") for n in ("year", "month", "day", "hour"))))
    assert [f.name for f in g.features][2:] == ["year", "month", "day", "hour"]


def test_feature_count_limit():
    feats = [F("id", "String"), F("et", "String")] + [F(f"f{i}", "Integral") for i in range(2498)]
    assert len(make(features=feats).features) == 2500
    with pytest.raises(DefinitionError, match="2501 features; at most 2500"):
        make(features=feats + [F("one_more", "Integral")])


def test_feature_lookup():
    g = make()
    assert g.feature("age") == F("age", "Integral")
    with pytest.raises(RecordValidationError, match="has no feature 'agee'; its features are id, et, age"):
        g.feature("agee")


def test_with_added_features_and_ttl_bump_version():
    g = make()
    g2 = g.with_added_features([F("city", "String"), {"FeatureName": "n", "FeatureType": "Integral"}])
    assert g2.version == 2 and g2.feature_names == ("id", "et", "age", "city", "n")
    assert g.version == 1  # immutable
    g3 = g2.with_ttl(Ttl(1, "Hours"))
    assert g3.version == 3 and g3.ttl.seconds == 3600
    assert g3.with_ttl(None).ttl is None


@pytest.mark.parametrize("defs,match", [
    ([], "no features to add"),
    ([F("age", "String")], "already defined as Integral"),
    ([F("age", "Integral")], "already defined"),
    ([F("x", "String"), F("x", "String")], "defined twice"),
    ([F("is_deleted", "String")], "reserved"),
])
def test_with_added_features_rejects(defs, match):
    with pytest.raises(DefinitionError, match=match):
        make().with_added_features(defs)


def test_a_groups_topic_is_its_lifes_and_the_life_survives_json_and_updates():
    plain = make(creation_time=1.5)
    assert plain.topic("fs") == "fs.customers" and "topic_life" not in plain.to_dict()  # the old form
    later = make(creation_time=1.5, topic_life=plain.life)
    assert later.topic("fs") == "fs.customers._1500000"
    back = FeatureGroup.from_dict(orjson.loads(orjson.dumps(later.to_dict())))
    assert back == later and back.topic("fs") == later.topic("fs")
    assert later.with_ttl(None).topic("fs") == later.topic("fs")  # a new version, the same topic


@pytest.mark.parametrize("bad", ["", "12a", "-1", "1" * 21, 17, "\u0661"])
def test_a_topic_life_that_is_not_decimal_digits_is_refused(bad):
    with pytest.raises(DefinitionError, match="topic_life must be None or 1-20 decimal digits"):
        make(topic_life=bad)
