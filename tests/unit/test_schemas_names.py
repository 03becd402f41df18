import pytest

from schemas.errors import DefinitionError
from schemas.names import (
    deadletter_topic,
    group_from_topic,
    group_topic,
    offline_table_uri,
    online_key,
    online_key_pattern,
    parse_group_topic,
    partition_field_name,
    record_id_from_key,
    registry_topic,
    validate_name,
)


@pytest.mark.parametrize("name", ["a", "A1", "customer_features", "x-y_z", "9", "a" * 64, "a-_-b"])
def test_valid_names(name):
    assert validate_name(name) == name


@pytest.mark.parametrize("name,why", [
    ("", "empty"), ("a" * 65, "65 characters"), ("_a", "starts with '_'"), ("a-", "ends with '-'"),
    ("a.b", "contains '.'"), ("a b", "contains ' '"), ("é1", "starts with 'é'"), ("ab$c", "contains '$'"),
])
def test_invalid_names_say_why(name, why):
    with pytest.raises(DefinitionError) as exc:
        validate_name(name, "feature")
    assert why in str(exc.value) and "1-64 characters" in str(exc.value)
    assert exc.value.value == name


@pytest.mark.parametrize("bad", [None, 42, b"abc", ["a"]])
def test_non_string_names(bad):
    with pytest.raises(DefinitionError, match="must be a string"):
        validate_name(bad)


def test_topics():
    assert group_topic("fs", "customers") == "fs.customers"
    assert registry_topic("fs") == "fs._registry"
    assert deadletter_topic("fs") == "fs._deadletter"
    assert group_from_topic("fs", "fs.customers") == "customers"
    assert group_from_topic("fs.test", "fs.test.customers") == "customers"
    for topic in ("fs._registry", "fs._deadletter", "other.customers", "fs.", "fsx.customers", "fs.a.b"):
        assert group_from_topic("fs", topic) is None


def test_a_later_lifes_topic_names_its_group_and_life_and_no_other_prefixs_group():
    assert group_topic("fs", "customers", "1733290000123456") == "fs.customers._1733290000123456"
    assert parse_group_topic("fs", "fs.customers._1733290000123456") == ("customers", "1733290000123456")
    assert parse_group_topic("fs", "fs.customers") == ("customers", None)
    assert group_from_topic("fs", "fs.customers._17") == "customers"
    # prefix "fs.test" with a group "123": its topic is no life of a group "test" of prefix "fs"
    assert parse_group_topic("fs", "fs.test.123") is None
    # ...and a life's topic of prefix "fs" is no group of prefix "fs.test" (no group starts with "_")
    assert parse_group_topic("fs.test", "fs.test._17") is None
    for topic in ("fs.customers._", "fs.customers._1a", "fs.customers._-1", "fs._17", "fs.customers.__17",
                  "fs.customers._\u0661", "fs.test._registry"):
        assert parse_group_topic("fs", topic) is None, topic


def test_online_keys_have_no_group_hash_tag():
    key = online_key("fs", "customers", "c-42")
    assert key == "fs:customers:c-42"
    assert "{" not in key
    assert online_key("fs", "g", "1") != online_key("fs", "g", "2")
    assert record_id_from_key("fs", "customers", key.encode()) == "c-42"
    assert record_id_from_key("fs", "other", key) is None


def test_online_key_pattern_escapes_glob():
    assert online_key_pattern("fs", "customers") == "fs:customers:*"
    assert online_key_pattern("f*[s]?", "g") == r"f\*\[s\]\?:g:*"


def test_offline_layout():
    assert offline_table_uri("s3://b/off/", "customers", 1633176000) == "s3://b/off/customers-1633176000"
    assert partition_field_name("event_time") == "event_time_day"
