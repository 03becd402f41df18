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
from sinks.offline.catalog import CATALOG_NAME, io_properties

ICEBERG_VERSION = "1.12.0"
SPARK_PACKAGES = (f"org.apache.iceberg:iceberg-spark-runtime-4.1_2.13:{ICEBERG_VERSION},"
                  f"org.apache.iceberg:iceberg-aws-bundle:{ICEBERG_VERSION}")


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


def _spark(group: FeatureGroup, namespace: str, catalog_uri: str, s3: Mapping[str, str]) -> str:
    url, user, secret = jdbc_url(catalog_uri)
    driver = "org.xerial:sqlite-jdbc:3.46.1.0" if url.startswith("jdbc:sqlite") else "org.postgresql:postgresql:42.7.14"
    c = f"spark.sql.catalog.{CATALOG_NAME}"
    conf = [
        f"{c}=org.apache.iceberg.spark.SparkCatalog",
        f"{c}.catalog-impl=org.apache.iceberg.jdbc.JdbcCatalog",
        f"{c}.uri={url}",
        f"{c}.jdbc.schema-version=V1",
        f"{c}.catalog-name={CATALOG_NAME}",
        f"{c}.warehouse={group.offline_uri.rsplit('/', 1)[0] if group.offline_uri else ''}",
    ]
    if user:
        conf.append(f"{c}.jdbc.user={user}")
    if secret:
        conf.append(f"{c}.jdbc.password=<password>")
    if s3.get("s3.endpoint"):
        conf += [f"{c}.io-impl=org.apache.iceberg.aws.s3.S3FileIO", f"{c}.s3.endpoint={s3['s3.endpoint']}",
                 f"{c}.s3.path-style-access=true", f"{c}.client.region={s3.get('s3.region', 'us-east-1')}",
                 f"{c}.s3.access-key-id=$AWS_ACCESS_KEY_ID", f"{c}.s3.secret-access-key=$AWS_SECRET_ACCESS_KEY"]
    lines = [f"-- Spark 4.1 (pyspark 4.1.x): spark-sql --packages {SPARK_PACKAGES},{driver} \\"]
    lines += [f"--   --conf {line} \\" for line in conf]
    lines[-1] = lines[-1].removesuffix(" \\")
    lines.append(f"SELECT * FROM {CATALOG_NAME}.`{namespace}`.`{group.name}`;")
    return "\n".join(lines)


def _trino(group: FeatureGroup, namespace: str, catalog_uri: str, s3: Mapping[str, str]) -> str:
    url, user, secret = jdbc_url(catalog_uri)
    lines = [f"-- Trino: etc/catalog/{CATALOG_NAME}.properties (Trino's JDBC catalog speaks PostgreSQL or MySQL,"
             " not SQLite: use a Postgres FEATURESTREAM_CATALOG_URI to share the catalog with Trino)"]
    props = ["connector.name=iceberg", "iceberg.catalog.type=jdbc",
             f"iceberg.jdbc-catalog.catalog-name={CATALOG_NAME}",
             f"iceberg.jdbc-catalog.connection-url={url}",
             f"iceberg.jdbc-catalog.default-warehouse-dir={group.offline_uri.rsplit('/', 1)[0] if group.offline_uri else ''}"]
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
        "--  sinks writing through Glue as their catalog is not supported yet.)",
        f'SELECT * FROM "{namespace}"."{group.name}";',
    ])


def engine_instructions(group: FeatureGroup, namespace: str, catalog_uri: str, *,
                        metadata_location: str | None = None,
                        storage_options: Mapping[str, Any] | None = None) -> str:
    """Spark, Trino and Athena instructions for ``group``'s table, each ending in a SELECT."""
    s3 = io_properties(storage_options) if storage_options else {}
    return "\n\n".join([
        f"-- feature group {group.name!r}: Iceberg table {CATALOG_NAME}.{namespace}.{group.name} at "
        f"{group.offline_uri}\n-- partitioned by day({group.event_time_name}); the exact nanosecond event time "
        "is the _event_time_ns column",
        _spark(group, namespace, catalog_uri, s3),
        _trino(group, namespace, catalog_uri, s3),
        _athena(group, namespace, metadata_location),
    ]) + "\n"
