"""What Spark, Trino and Athena need to read a group's Iceberg table (``featurestream ddl``).

Engines must read the table through an Iceberg catalog, never the ``data/`` folder: only the
table's snapshots say which files are live (a compaction's inputs and outputs coexist on disk
until orphan removal). Spark reads the very catalog featurestream writes (Iceberg's JDBC
catalog over the same SQLite or Postgres database); Trino's JDBC catalog needs Postgres (or
MySQL); Athena needs the table registered in AWS Glue from its current metadata file.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from schemas.group import FeatureGroup
from sinks.offline.catalog import CATALOG_NAME, catalog_properties, io_properties

# Keep equal to deploy/spark/pom.xml, whose jars `make setup` fetches for the interop test
# (tests/unit/test_spark_jars.py checks they agree): what is printed here is what was tested.
ICEBERG_VERSION = "1.12.0"
SQLITE_JDBC = "org.xerial:sqlite-jdbc:3.51.1.0"
POSTGRES_JDBC = "org.postgresql:postgresql:42.7.14"
SPARK_PACKAGES = (f"org.apache.iceberg:iceberg-spark-runtime-4.1_2.13:{ICEBERG_VERSION},"
                  f"org.apache.iceberg:iceberg-aws-bundle:{ICEBERG_VERSION}")
ACCESS_KEY_PLACEHOLDER = "$AWS_ACCESS_KEY_ID"
SECRET_KEY_PLACEHOLDER = "$AWS_SECRET_ACCESS_KEY"
PASSWORD_PLACEHOLDER = "<password>"


def jdbc_url(catalog_uri: str) -> tuple[str, str | None, bool]:
    """The JDBC URL of an SQLAlchemy catalog URL, its user, and whether it has a password (which
    is never printed: a placeholder stands for it)."""
    if catalog_uri.startswith("sqlite:///"):
        return f"jdbc:sqlite:{catalog_uri.removeprefix('sqlite:///')}", None, False
    parts = urlsplit(catalog_uri)
    scheme = parts.scheme.split("+", 1)[0]
    secret = parts.password is not None
    if scheme in ("postgresql", "postgres"):
        host = parts.hostname or "localhost"
        port = f":{parts.port}" if parts.port else ""
        return f"jdbc:postgresql://{host}{port}{parts.path}", parts.username, secret
    return f"jdbc:{scheme}://{parts.hostname}{parts.path}", parts.username, secret


def jdbc_driver(catalog_uri: str) -> str:
    """The Maven coordinate of the JDBC driver Spark needs for the catalog database."""
    return SQLITE_JDBC if catalog_uri.startswith("sqlite:") else POSTGRES_JDBC


def spark_catalog_conf(catalog_uri: str, warehouse: str, storage_options: Mapping[str, Any] | None = None, *,
                       with_secrets: bool = False) -> dict[str, str]:
    """The Spark settings of the Iceberg catalog that reads featurestream's catalog at
    ``catalog_uri`` (Iceberg's JdbcCatalog over the same database).

    The Spark catalog must be named ``featurestream`` (:data:`CATALOG_NAME`): the JDBC catalog
    keys its rows by the catalog's name, and Spark's SparkCatalog passes its own name
    (``spark.sql.catalog.<name>``) to it; a ``catalog-name`` property does not change that
    (tested: a Spark catalog named otherwise sees no namespace). ``jdbc.schema-version=V1`` is
    the table layout pyiceberg's SQL catalog writes; ``warehouse`` only matters to tables Spark
    creates, but must not be empty. ``cache-enabled=false``:
    Spark's catalog otherwise keeps a table's metadata for 30 s, so a table the sink commits to
    reads stale and ``VERSION AS OF`` a newer snapshot fails ("Cannot find snapshot"); without
    the cache every query sees the latest commit, as featurestream's own queries do. Secrets (the S3
    keys, the database password) are placeholders unless ``with_secrets``.
    """
    c = f"spark.sql.catalog.{CATALOG_NAME}"
    props = catalog_properties(catalog_uri)
    if props["type"] != "sql":
        # REST, Glue or Hive: Spark's Iceberg catalog of the same type, with the same properties
        # (secrets among them, e.g. a REST credential, as placeholders unless with_secrets).
        conf = {c: "org.apache.iceberg.spark.SparkCatalog", f"{c}.warehouse": warehouse, f"{c}.cache-enabled": "false"}
        for key, value in props.items():
            hidden = any(word in key for word in ("credential", "token", "secret", "password"))
            conf[f"{c}.{key}"] = value if with_secrets or not hidden else PASSWORD_PLACEHOLDER
    else:
        url, user, secret = jdbc_url(catalog_uri)
        conf = {
            c: "org.apache.iceberg.spark.SparkCatalog",
            f"{c}.catalog-impl": "org.apache.iceberg.jdbc.JdbcCatalog",
            f"{c}.uri": url,
            f"{c}.jdbc.schema-version": "V1",
            f"{c}.warehouse": warehouse,
            f"{c}.cache-enabled": "false",
        }
        if user:
            conf[f"{c}.jdbc.user"] = user
        if secret:
            conf[f"{c}.jdbc.password"] = ((urlsplit(catalog_uri).password or "") if with_secrets
                                          else PASSWORD_PLACEHOLDER)
    s3 = io_properties(storage_options) if storage_options else {}
    if s3.get("s3.endpoint"):
        conf |= {f"{c}.io-impl": "org.apache.iceberg.aws.s3.S3FileIO", f"{c}.s3.endpoint": s3["s3.endpoint"],
                 f"{c}.s3.path-style-access": "true", f"{c}.client.region": s3.get("s3.region", "us-east-1")}
        if with_secrets:
            conf |= {f"{c}.s3.access-key-id": s3.get("s3.access-key-id", ""),
                     f"{c}.s3.secret-access-key": s3.get("s3.secret-access-key", "")}
        else:
            conf |= {f"{c}.s3.access-key-id": ACCESS_KEY_PLACEHOLDER,
                     f"{c}.s3.secret-access-key": SECRET_KEY_PLACEHOLDER}
    return conf


def _warehouse(group: FeatureGroup) -> str:
    return group.offline_uri.rsplit("/", 1)[0] if group.offline_uri else ""


def _spark(group: FeatureGroup, namespace: str, catalog_uri: str, storage_options: Mapping[str, Any] | None) -> str:
    conf = spark_catalog_conf(catalog_uri, _warehouse(group), storage_options)
    lines = [f"-- Spark 4.1 (pyspark 4.1.x): spark-sql --packages {SPARK_PACKAGES},{jdbc_driver(catalog_uri)} \\"]
    lines += [f"--   --conf {k}={v} \\" for k, v in conf.items()]
    lines[-1] = lines[-1].removesuffix(" \\")
    table = f"{CATALOG_NAME}.`{namespace}`.`{group.name}`"
    lines += [
        "-- (or --jars with the jars `make setup` caches in ~/.featurestream/cache/spark-iceberg)",
        f"SELECT * FROM {table};",
        "-- commits, with the Kafka offsets each one covers; time travel to one of them:",
        f"SELECT snapshot_id, committed_at, summary['featurestream.kafka-offsets'] FROM {table}.snapshots;",
        f"SELECT * FROM {table} VERSION AS OF <snapshot_id>;",
    ]
    return "\n".join(lines)


def _trino(group: FeatureGroup, namespace: str, catalog_uri: str, storage_options: Mapping[str, Any] | None) -> str:
    s3 = io_properties(storage_options) if storage_options else {}
    url, user, secret = jdbc_url(catalog_uri)
    lines = [f"-- Trino: etc/catalog/{CATALOG_NAME}.properties (Trino's JDBC catalog speaks PostgreSQL or MySQL,"
             " not SQLite: use a Postgres FEATURESTREAM_CATALOG_URI to share the catalog with Trino)"]
    props = ["connector.name=iceberg", "iceberg.catalog.type=jdbc",
             f"iceberg.jdbc-catalog.catalog-name={CATALOG_NAME}",
             f"iceberg.jdbc-catalog.connection-url={url}",
             f"iceberg.jdbc-catalog.default-warehouse-dir={_warehouse(group)}"]
    if user:
        props.append(f"iceberg.jdbc-catalog.connection-user={user}")
    if secret:
        props.append("iceberg.jdbc-catalog.connection-password=<password>")
    if s3.get("s3.endpoint"):
        props += ["fs.native-s3.enabled=true", f"s3.endpoint={s3['s3.endpoint']}", "s3.path-style-access=true",
                  f"s3.region={s3.get('s3.region', 'us-east-1')}"]
    lines += [f"--   {p}" for p in props]
    lines.append(f'SELECT * FROM {CATALOG_NAME}."{namespace}"."{group.name}";')
    return "\n".join(lines)


def _athena(group: FeatureGroup, namespace: str, metadata_location: str | None) -> str:
    where = metadata_location or "<the table's current metadata file: run a sink first>"
    glue = json.dumps({"Name": group.name, "TableType": "EXTERNAL_TABLE",
                       "Parameters": {"table_type": "ICEBERG", "metadata_location": where}})
    return "\n".join([
        "-- Athena (AWS S3 only): register the table in AWS Glue from its current metadata file, once",
        f"--   aws glue create-database --database-input '{{\"Name\": \"{namespace}\"}}'",
        f"--   aws glue create-table --database-name {namespace} --table-input '{glue}'",
        "-- (Glue keeps that metadata file: later commits are not seen until it is updated to the new one;",
        "--  or run the sinks with Glue as their catalog, FEATURESTREAM_CATALOG_URI=glue://?glue.region=..., untested here.)",
        f'SELECT * FROM "{namespace}"."{group.name}";',
    ])


def engine_instructions(group: FeatureGroup, namespace: str, catalog_uri: str, *,
                        metadata_location: str | None = None,
                        storage_options: Mapping[str, Any] | None = None) -> str:
    """Spark, Trino and Athena instructions for ``group``'s table, each ending in a SELECT."""
    return "\n\n".join([
        f"-- feature group {group.name!r}: Iceberg table {CATALOG_NAME}.{namespace}.{group.name} at "
        f"{group.offline_uri}\n-- partitioned by day({group.event_time_name}); the exact nanosecond event time "
        "is the _event_time_ns column",
        _spark(group, namespace, catalog_uri, storage_options),
        _trino(group, namespace, catalog_uri, storage_options),
        _athena(group, namespace, metadata_location),
    ]) + "\n"
