"""Catalog URIs → pyiceberg catalog properties (pure), their redaction, and a REST catalog that is down."""

import time

import pytest

from sinks.offline.catalog import catalog_properties, open_catalog, redact
from sinks.offline.engine_ddl import spark_catalog_conf
from sinks.offline.errors import OfflineLayoutError, OfflineStorageError


@pytest.mark.parametrize("uri,expected", [
    ("sqlite:////var/lib/fs/catalog.db", {"type": "sql", "uri": "sqlite:////var/lib/fs/catalog.db"}),
    ("postgresql+psycopg2://u:pw@db/cat", {"type": "sql", "uri": "postgresql+psycopg2://u:pw@db/cat"}),
    ("rest+https://polaris:8181/api/catalog?warehouse=prod&credential=id%3As3cret",
     {"type": "rest", "uri": "https://polaris:8181/api/catalog", "warehouse": "prod", "credential": "id:s3cret"}),
    ("glue://?glue.region=eu-west-1", {"type": "glue", "glue.region": "eu-west-1"}),
    ("hive+thrift://metastore:9083", {"type": "hive", "uri": "thrift://metastore:9083"}),
])
def test_uri_forms_map_to_pyiceberg_properties(uri, expected):
    assert catalog_properties(uri) == expected


@pytest.mark.parametrize("uri,message", [
    ("catalog.db", "must be an SQLAlchemy URL"),
    ("rest://polaris:8181", "names its server"),
    ("hive+thrift://", "names its server"),
    ("glue://somewhere", "glue:// with properties"),
])
def test_malformed_uris_say_what_a_valid_one_looks_like(uri, message):
    with pytest.raises(OfflineLayoutError, match=message):
        catalog_properties(uri)


def test_redaction_hides_passwords_and_query_strings():
    assert redact("postgresql+psycopg2://u:pw@db/cat") == "postgresql+psycopg2://u:***@db/cat"
    assert redact("rest+https://polaris/api?credential=id:s3cret") == "rest+https://polaris/api?..."
    assert "s3cret" not in redact("rest+https://u:s3cret@polaris/api?token=s3cret")


def test_a_rest_catalog_that_is_down_fails_at_once_naming_it_without_secrets():
    started = time.monotonic()
    with pytest.raises(OfflineStorageError) as info:
        open_catalog("rest+http://127.0.0.1:9/api/catalog?credential=id:s3cret")
    assert time.monotonic() - started < 30
    assert "rest+http://127.0.0.1:9/api/catalog" in str(info.value) and "s3cret" not in str(info.value)


def test_spark_conf_for_a_rest_catalog_uses_its_type_and_hides_its_credential():
    conf = spark_catalog_conf("rest+https://polaris/api?warehouse=prod&credential=id:s3cret", "s3://b/offline")
    c = "spark.sql.catalog.featurestream"
    assert conf[f"{c}.type"] == "rest" and conf[f"{c}.uri"] == "https://polaris/api"
    assert conf[f"{c}.warehouse"] == "prod" and "s3cret" not in str(conf)
    assert f"{c}.catalog-impl" not in conf
