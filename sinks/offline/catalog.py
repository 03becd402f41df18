"""The Iceberg catalog that registers every group's offline table.

pyiceberg's SQL catalog: a SQLite file (the embedded default, in the state dir) or a Postgres
database (several hosts); or, by URI scheme, a REST, Glue or Hive catalog (``open_catalog``).
A commit is a compare-and-swap of the table's metadata location in that database, which is what makes a table's snapshot, and the Kafka offsets recorded in it,
the one truth every writer checks against.

Tables are named ``<namespace>.<group>`` (the namespace is the topic prefix) and live at the
group's resolved offline location, ``<offline_uri>/<group>-<creation epoch>/``. Every table
is created with ``commit.retry.num-retries = 0``: pyiceberg would otherwise retry a conflicting
commit by itself, rebasing our append onto a snapshot whose recorded offsets it never checked
(see ``table_commit.py``); we reload, re-check and retry ourselves.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any

from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import CommitFailedException, NoSuchTableError, TableAlreadyExistsError
from pyiceberg.table import Table

from schemas.ddl import offline_arrow_schema
from schemas.group import FeatureGroup
from sinks.offline.errors import OfflineLayoutError, OfflineStorageError, StaleGroupError
from sinks.offline.table_format import partition_spec, table_schema

CATALOG_NAME = "featurestream"
DEFAULT_TARGET_FILE_BYTES = 128 * 1024 * 1024
TABLE_PROPERTIES = {
    "format-version": "2",
    "commit.retry.num-retries": "0",          # we retry ourselves, after re-checking offsets
    "write.target-file-size-bytes": str(DEFAULT_TARGET_FILE_BYTES),
    "write.parquet.compression-codec": "zstd",
    "commit.manifest-merge.enabled": "true",
    # Old metadata.json files go away on their own; snapshots by expiry (maintenance.py).
    "write.metadata.delete-after-commit.enabled": "true",
    "write.metadata.previous-versions-max": "50",
}
# Which life of its name (FeatureGroup.life) a table was created for: a writer still holding a
# deleted life's rows must never drop a later life's table to make room for its own.
LIFE_PROPERTY = "featurestream.group-life"


def io_properties(storage_options: Mapping[str, Any] | None) -> dict[str, str]:
    """pyiceberg FileIO properties from the fsspec/s3fs options featurestream passes around."""
    opts = dict(storage_options or {})
    props: dict[str, str] = {}
    endpoint = (opts.get("client_kwargs") or {}).get("endpoint_url")
    if endpoint:
        props["s3.endpoint"] = str(endpoint)
    if opts.get("key"):
        props["s3.access-key-id"] = str(opts["key"])
        props["s3.secret-access-key"] = str(opts.get("secret") or "")
    props["s3.region"] = str((opts.get("client_kwargs") or {}).get("region_name") or "us-east-1")
    # A server that is down must fail fast with a clear error, not hang the sink in retries.
    config = opts.get("config_kwargs") or {}
    props["s3.connect-timeout"] = str(float(config.get("connect_timeout", 5)))
    props["s3.request-timeout"] = str(float(config.get("read_timeout", 60)))
    return props


# Catalogs other than the SQL one, by URI scheme: "<type>+<scheme>://..." hands "<scheme>://..." to
# pyiceberg's catalog of that type; the query string carries its other properties. A commit must
# still be a compare-and-swap (REST: the server checks the snapshot the commit was based on; Glue:
# the table version; Hive: the metastore lock), which is all table_commit.py relies on.
_OTHER_CATALOGS = {"rest": "rest", "glue": "glue", "hive": "hive"}


def catalog_properties(uri: str) -> dict[str, str]:
    """pyiceberg catalog properties for ``uri`` (pure; see :func:`open_catalog` for the forms)."""
    if not isinstance(uri, str) or "://" not in uri:
        raise OfflineLayoutError(f"Iceberg catalog URI must be an SQLAlchemy URL like sqlite:////var/lib/"
                                 f"featurestream/catalog.db or postgresql+psycopg2://user:pw@host/db, or "
                                 f"rest+https://host/path, glue://, hive+thrift://host:9083; got {uri!r}")
    scheme, _, rest = uri.partition("://")
    kind, plus, inner = scheme.partition("+")
    if kind not in _OTHER_CATALOGS:
        return {"type": "sql", "uri": uri}
    from urllib.parse import parse_qsl

    location, _, query = rest.partition("?")
    props = {"type": _OTHER_CATALOGS[kind]}
    for key, value in parse_qsl(query, keep_blank_values=True, strict_parsing=False):
        props[key] = value
    if kind == "glue":
        if plus or location.strip("/"):
            raise OfflineLayoutError(f"a Glue catalog URI is glue:// with properties in the query string "
                                     f"(glue://?glue.region=eu-west-1); got {redact(uri)}")
        return props
    if not plus or not location:
        raise OfflineLayoutError(f"a {kind} catalog URI names its server: {kind}+https://host/path or "
                                 f"{kind}+http://host:port{'' if kind == 'rest' else ' (hive+thrift://host:9083)'}; "
                                 f"got {redact(uri)}")
    props["uri"] = f"{inner}://{location}"
    return props


def open_catalog(uri: str, storage_options: Mapping[str, Any] | None = None) -> Catalog:
    """The Iceberg catalog at ``uri``.

    - ``sqlite:////path/catalog.db`` or ``postgresql+psycopg2://user:pw@host/db``: pyiceberg's SQL catalog
      (the embedded default, and the shared one for several hosts);
    - ``rest+https://host/path?warehouse=...&credential=...``: a REST catalog (Polaris, Nessie, Gravitino, ...);
    - ``glue://?glue.region=eu-west-1``: AWS Glue;
    - ``hive+thrift://host:9083``: a Hive metastore.

    Query-string parameters become the catalog's properties (pyiceberg's names); S3 settings come from
    featurestream's own (``io_properties``) unless the query string names them.
    """
    props = catalog_properties(uri)
    if props["type"] == "sql" and uri.startswith("sqlite:///"):
        import os

        path = uri.removeprefix("sqlite:///")
        if path and os.path.dirname(path):
            os.makedirs(os.path.dirname(path), exist_ok=True)
    try:
        if props["type"] == "sql":
            from pyiceberg.catalog.sql import SqlCatalog

            return SqlCatalog(CATALOG_NAME, uri=uri, **io_properties(storage_options))
        from pyiceberg.catalog import load_catalog

        return load_catalog(CATALOG_NAME, **{**io_properties(storage_options), **props})
    except Exception as exc:  # noqa: BLE001 - SQLAlchemy, drivers and HTTP clients raise many types; name the URI
        raise OfflineStorageError(f"cannot open the Iceberg catalog at {redact(uri)}: "
                                  f"{type(exc).__name__}: {exc}") from exc


def redact(uri: str) -> str:
    """The URI without its password or query string (a REST catalog's credential rides there),
    for error messages and logs."""
    base, q, _query = uri.partition("?")
    hidden = "?..." if q else ""
    scheme, sep, rest = base.partition("://")
    if not sep or "@" not in rest:
        return base + hidden
    creds, at, host = rest.rpartition("@")
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}{hidden}"


class OfflineTables:
    """The offline tables of one topic prefix in one catalog: load, or create on first use.

    Thread-safe; tables are loaded fresh on every call (a commit needs the latest metadata).

    ``is_current`` (the sink passes one that asks the registry): a table is created only for a group
    that is still the registry's life of its name. A sink flushing rows buffered before the group was
    deleted (and purged) would otherwise create the table again at the deleted life's location, after
    the purge dropped it: debris at best, and a catalog entry whose files the purge then deletes.
    """

    def __init__(self, catalog: Catalog, namespace: str, *,
                 is_current: Callable[[FeatureGroup], bool] | None = None) -> None:
        self.catalog = catalog
        self.namespace = namespace
        self.is_current = is_current
        self._lock = threading.Lock()
        self._namespace_ready = False

    @classmethod
    def open(cls, catalog_uri: str, namespace: str, storage_options: Mapping[str, Any] | None = None, *,
             is_current: Callable[[FeatureGroup], bool] | None = None) -> OfflineTables:
        return cls(open_catalog(catalog_uri, storage_options), namespace, is_current=is_current)

    def identifier(self, group: FeatureGroup | str) -> tuple[str, str]:
        name = group if isinstance(group, str) else group.name
        return (self.namespace, name)

    def existing(self, group: FeatureGroup) -> Table | None:
        """The group's table, or None if none was created yet (or it belongs to another life of the
        same name, deleted and created again: at another location, or purged under its entry)."""
        table = self.registered(group)
        if isinstance(table, str):
            # The message names the path, with or without its scheme (pyarrow's S3 file system).
            if group.offline_uri and _bare(group.offline_uri) + "/" in table:
                # This life's own metadata is gone: nothing may paper over that.
                raise OfflineStorageError(f"feature group {group.name!r}: its Iceberg table "
                                          f"{'.'.join(self.identifier(group))} has lost its metadata: {table}")
            return None  # another life's entry, its files purged under it
        if table is None:
            return None
        if group.offline_uri and _norm(table.location()) != _norm(group.offline_uri):
            return None
        return table

    def registered(self, group: FeatureGroup) -> Table | str | None:
        """The table registered under the group's name; the missing metadata file's path (a str) if the
        entry's files were deleted under it; None if no table is registered."""
        try:
            return self.catalog.load_table(self.identifier(group))
        except NoSuchTableError:
            return None
        except FileNotFoundError as exc:  # pyiceberg: "Cannot open file, does not exist: <path>"
            return str(exc)
        except Exception as exc:  # noqa: BLE001 - driver/IO errors: name the table
            hint = " (is the S3 server up and FEATURESTREAM_S3_ENDPOINT_URL right?)" if isinstance(exc, OSError) else ""
            raise OfflineStorageError(f"feature group {group.name!r}: cannot load its Iceberg table "
                                      f"{'.'.join(self.identifier(group))}: {type(exc).__name__}: {exc}{hint}") from exc

    def table(self, group: FeatureGroup) -> Table:
        """The group's table, created (schema, day partitions, location) if missing; columns added
        by a group update are added to the table's schema first.

        Raises StaleGroupError, creating nothing, if the table is missing and ``is_current`` says the
        group is no longer the registry's life of its name."""
        if not group.offline_enabled or not group.offline_uri:
            raise OfflineLayoutError(f"feature group {group.name!r} has no offline store (offline_enabled "
                                     f"{group.offline_enabled}, offline_uri {group.offline_uri!r})")
        table = self.existing(group)
        try:
            if table is None:
                if self.is_current is not None and not self.is_current(group):
                    raise StaleGroupError(
                        f"feature group {group.name!r} (created {group.creation_time:.6f}) was deleted, or "
                        f"deleted and created again, before these rows reached its offline table, and the "
                        f"table is gone: not creating it again at {group.offline_uri}", group=group.name)
                table = self._create(group)
            return self._evolve(table, group)
        except (OfflineStorageError, StaleGroupError):
            raise
        except CommitFailedException:
            return self.catalog.load_table(self.identifier(group))  # someone evolved it first
        except Exception as exc:  # noqa: BLE001 - S3 (OSError), SQLAlchemy, pyiceberg: name the table
            raise OfflineStorageError(
                f"feature group {group.name!r}: cannot create or update its Iceberg table at {group.offline_uri}: "
                f"{type(exc).__name__}: {exc} (is the S3 server up and FEATURESTREAM_S3_ENDPOINT_URL right?)") from exc

    def _create(self, group: FeatureGroup) -> Table:
        schema = table_schema(offline_arrow_schema(group), group.event_time_name,
                              where=f"feature group {group.name!r}")
        ident = self.identifier(group)
        with self._lock:
            if not self._namespace_ready:
                self.catalog.create_namespace_if_not_exists(self.namespace)
                self._namespace_ready = True
        stale = self.registered(group)
        if isinstance(stale, str):
            self.catalog.drop_table(ident)  # a purged life's entry, pointing at deleted files
        elif stale is not None and _norm(stale.location()) != _norm(group.offline_uri or ""):
            theirs = stale.properties.get(LIFE_PROPERTY)
            if theirs is not None and int(theirs) > int(group.life):
                raise StaleGroupError(f"feature group {group.name!r}: a later life of the group (created "
                                      f"{int(theirs) / 1e6:.6f}) owns its offline table at {stale.location()}; "
                                      f"this writer holds rows of the life created {group.creation_time:.6f}",
                                      group=group.name)
            # An earlier life's table under the same name: unregister it (its files stay, purge
            # deletes them) so this life gets a table at its own location.
            self.catalog.drop_table(ident)
        try:
            return self.catalog.create_table(ident, schema, location=group.offline_uri,
                                             partition_spec=partition_spec(schema, group.event_time_name),
                                             properties={**TABLE_PROPERTIES, LIFE_PROPERTY: group.life})
        except TableAlreadyExistsError:  # another process created it a moment ago
            return self.catalog.load_table(ident)

    @staticmethod
    def _evolve(table: Table, group: FeatureGroup) -> Table:
        wanted = table_schema(offline_arrow_schema(group), group.event_time_name)
        have = set(table.schema().column_names)
        if all(f.name in have for f in wanted.fields):
            return table
        with table.update_schema() as update:
            update.union_by_name(wanted)
        return table

    def drop_life(self, group: FeatureGroup) -> bool:
        """Unregister the table under the group's name if it is this life's: at the group's location,
        or an entry whose files are gone. A later life's table is left alone; its files are the caller's
        to delete. True if one was dropped."""
        registered = self.registered(group)
        if registered is None:
            return False
        if isinstance(registered, Table) and group.offline_uri \
                and _norm(registered.location()) != _norm(group.offline_uri):
            return False
        try:
            self.catalog.drop_table(self.identifier(group))
        except NoSuchTableError:
            return False  # another process dropped it first
        return True


def _norm(location: str) -> str:
    loc = location.rstrip("/")
    return loc.removeprefix("file://")


def _bare(location: str) -> str:
    """The location without its scheme (s3://bucket/p -> bucket/p)."""
    return location.rstrip("/").split("://", 1)[-1]
