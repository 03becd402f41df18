import pytest

from schemas.errors import DefinitionError
from schemas.ttl import Ttl, parse_ttl
from schemas.types import CollectionType, FeatureDefinition, ScalarType


def test_enums_are_api_strings():
    assert ScalarType.STRING == "String" and ScalarType.INTEGRAL == "Integral"
    assert ScalarType.FRACTIONAL == "Fractional"
    assert [c.value for c in CollectionType] == ["List", "Set", "Vector"]


@pytest.mark.parametrize("fd,api", [
    (FeatureDefinition("age", ScalarType.INTEGRAL), {"FeatureName": "age", "FeatureType": "Integral"}),
    (FeatureDefinition("tags", ScalarType.STRING, CollectionType.LIST),
     {"FeatureName": "tags", "FeatureType": "String", "CollectionType": "List"}),
    (FeatureDefinition("emb", ScalarType.FRACTIONAL, CollectionType.VECTOR, 3),
     {"FeatureName": "emb", "FeatureType": "Fractional", "CollectionType": "Vector",
      "CollectionConfig": {"VectorConfig": {"Dimension": 3}}}),
])
def test_api_round_trip(fd, api):
    assert fd.to_api() == api
    assert FeatureDefinition.from_api(api) == fd


def test_strings_become_enums():
    fd = FeatureDefinition("s", "Integral", "Set")
    assert fd.type is ScalarType.INTEGRAL and fd.collection is CollectionType.SET
    assert fd.describe() == "Set<Integral>"


@pytest.mark.parametrize("kwargs,match", [
    (dict(name="x", type="Text"), "type 'Text' is not one of String, Integral, Fractional"),
    (dict(name="x", type="String", collection="Bag"), "collection type 'Bag'"),
    (dict(name="x", type="String", collection="Vector", dimension=3), "Vector holds Fractional"),
    (dict(name="x", type="Fractional", collection="Vector"), "needs a dimension"),
    (dict(name="x", type="Fractional", collection="Vector", dimension=0), "from 1 to 8192"),
    (dict(name="x", type="Fractional", collection="Vector", dimension=8193), "from 1 to 8192"),
    (dict(name="x", type="Fractional", collection="Vector", dimension=2.0), "from 1 to 8192"),
    (dict(name="x", type="Fractional", dimension=3), "only valid for a Vector"),
    (dict(name="bad name", type="String"), "invalid feature name"),
])
def test_invalid_definitions(kwargs, match):
    with pytest.raises(DefinitionError, match=match):
        FeatureDefinition(**kwargs)


def test_vector_max_dimension_ok():
    assert FeatureDefinition("v", "Fractional", "Vector", 8192).dimension == 8192


@pytest.mark.parametrize("api,match", [
    ("age", "must be an object"),
    ({"FeatureType": "String"}, "no FeatureName"),
    ({"FeatureName": "a"}, "no FeatureType"),
    ({"FeatureName": "a", "FeatureType": "Fractional", "CollectionType": "Vector",
      "CollectionConfig": {"Dimension": 3}}, "VectorConfig"),
    ({"FeatureName": "a", "FeatureType": 7}, "not one of"),
])
def test_from_api_rejects_malformed(api, match):
    with pytest.raises(DefinitionError, match=match):
        FeatureDefinition.from_api(api)


@pytest.mark.parametrize("text,value,unit,seconds", [
    ("30s", 30, "Seconds", 30), ("15m", 15, "Minutes", 900), ("12h", 12, "Hours", 43200),
    ("7d", 7, "Days", 604800), ("2w", 2, "Weeks", 1209600), (" 3d ", 3, "Days", 259200),
])
def test_parse_ttl(text, value, unit, seconds):
    ttl = parse_ttl(text)
    assert (ttl.value, ttl.unit, ttl.seconds) == (value, unit, seconds)
    assert Ttl.from_api(ttl.to_api()) == ttl
    assert ttl.to_api() == {"Unit": unit, "Value": value}


@pytest.mark.parametrize("text", ["0s", "-5m", "5", "d", "5y", "1.5h", "", "5 days", None, 7])
def test_parse_ttl_rejects(text):
    with pytest.raises(DefinitionError, match="TTL"):
        parse_ttl(text)


@pytest.mark.parametrize("value,unit", [(0, "Days"), (-1, "Days"), (1, "Years"), (True, "Days"),
                                        (1.5, "Hours"), (10**12, "Weeks")])
def test_ttl_rejects(value, unit):
    with pytest.raises(DefinitionError):
        Ttl(value, unit)


@pytest.mark.parametrize("api", [{"Unit": "Days"}, {"Value": 3}, "3d", None])
def test_ttl_from_api_rejects(api):
    with pytest.raises(DefinitionError):
        Ttl.from_api(api)
