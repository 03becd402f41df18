"""The Spark jars `make setup` fetches, and the Spark settings `featurestream ddl` prints."""

from __future__ import annotations

from pathlib import Path

import pytest

from featurestream.stack import spark_jars
from featurestream.stack.errors import StackError, ToolMissingError
from sinks.offline import engine_ddl


def test_the_printed_packages_are_the_fetched_jars() -> None:
    """What `ddl` tells users to pass to Spark is exactly what the interop test runs with."""
    fetched = {a.coordinate for a in spark_jars.pom_artifacts()}
    printed = set(engine_ddl.SPARK_PACKAGES.split(",")) | {engine_ddl.SQLITE_JDBC, engine_ddl.POSTGRES_JDBC}
    assert fetched == printed
    assert all(a.version and not a.version.startswith("$") for a in spark_jars.pom_artifacts())


def test_missing_jars_name_the_jar_and_make_setup(tmp_path: Path) -> None:
    with pytest.raises(StackError, match=r"iceberg-spark-runtime-4\.1_2\.13-1\.12\.0\.jar.*make setup"):
        spark_jars.jar_paths(tmp_path)
    d = spark_jars.jars_dir(tmp_path)
    d.mkdir()
    for a in spark_jars.pom_artifacts():
        (d / a.jar).write_bytes(b"")
    assert [p.name for p in spark_jars.jar_paths(tmp_path)] == [a.jar for a in spark_jars.pom_artifacts()]
    assert spark_jars.fetch(tmp_path, search_path="") is False  # cached: Maven is not even looked for


def test_fetch_without_maven_or_pom_says_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(ToolMissingError, match=r"spark jars: `mvn` \(Apache Maven\) was not found"):
        spark_jars.fetch(tmp_path, search_path=str(tmp_path))
    with pytest.raises(StackError, match="cannot read"):
        spark_jars.pom_artifacts(tmp_path / "nope.xml")
    bad = tmp_path / "pom.xml"
    bad.write_text("<project><dependencies>")
    with pytest.raises(StackError, match=str(bad)):
        spark_jars.pom_artifacts(bad)


def test_spark_catalog_conf_hides_secrets_unless_asked() -> None:
    opts = {"client_kwargs": {"endpoint_url": "http://127.0.0.1:9000"}, "key": "AK", "secret": "SK"}
    uri = "postgresql+psycopg2://fs:pw@db:5432/cat"
    shown = engine_ddl.spark_catalog_conf(uri, "s3://b/offline", opts)
    c = "spark.sql.catalog.featurestream"
    assert shown[f"{c}.uri"] == "jdbc:postgresql://db:5432/cat" and shown[f"{c}.jdbc.user"] == "fs"
    assert shown[f"{c}.jdbc.schema-version"] == "V1"
    assert shown[f"{c}.cache-enabled"] == "false"
    assert "pw" not in shown.values() and "AK" not in shown.values() and "SK" not in shown.values()
    real = engine_ddl.spark_catalog_conf(uri, "s3://b/offline", opts, with_secrets=True)
    assert real[f"{c}.jdbc.password"] == "pw"
    assert real[f"{c}.s3.access-key-id"] == "AK" and real[f"{c}.s3.secret-access-key"] == "SK"
    local = engine_ddl.spark_catalog_conf("sqlite:////var/fs/catalog.db", "/data/offline")
    assert local[f"{c}.uri"] == "jdbc:sqlite:/var/fs/catalog.db" and f"{c}.io-impl" not in local
