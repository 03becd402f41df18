"""DuckDB reads a pinned snapshot's data files itself: the plan, and the SQL that reads it.

pyiceberg plans the scan (manifests → the live data files of the snapshot the source pinned,
pruned by the day partitions and the column statistics of the event-time bounds); DuckDB then
reads those Parquet files in its own threads, only the columns and row groups a statement needs,
instead of pyiceberg materializing every column as Arrow first.

It reads what pyiceberg would:

- **Columns by field id**, not by position or name, as Iceberg's spec says (``read_parquet``'s
  ``schema`` map, keyed by the Parquet field ids our writers always store). A column that a file
  predates (a feature added by an update) reads as NULL; a view column the pinned snapshot's schema
  lacks is NULL too.
- **The view shape** (``table_format.to_view_rows``): the event time from ``_event_time_ns``, exact
  to the nanosecond; every column cast to the DuckDB type the view's Arrow schema maps to, so a
  statement sees the same types (and values, bit for bit) as over the Arrow the old path registered.
- **Deletes.** featurestream's writers never make delete files: the sink appends
  (``table_commit.commit_append``), compaction replaces whole files in an ``overwrite`` snapshot
  (``maintenance.rewrite_files``), and record deletes are rows (``is_deleted``). Another engine
  could add positional or equality delete files, though; a scan with any, a data file not in
  Parquet, a table with a name mapping (files without field ids) or a column type not mapped here
  is :class:`NotDirectlyReadable`, and the caller reads that source through pyiceberg instead.

Where the bytes come from. Local files: DuckDB's ``read_parquet`` with the field-id map, all in
DuckDB. ``s3://`` files: DuckDB's own S3 client (the httpfs extension) is downloaded on demand,
which cannot happen here, so the files are a ``pyarrow.dataset`` over pyarrow's C++ S3 client (set
up as pyiceberg's FileIO is: endpoint, keys, region, timeouts), registered with DuckDB, which pushes
its projection and filters into the Arrow scan. A dataset matches columns by name, which reads what
field ids would as long as no field id ever had another name in the table's schemas; featurestream
only adds columns, so that holds, and a table where it does not falls back to pyiceberg. The other
way, an fsspec filesystem registered with DuckDB (``register_filesystem``), was measured slower with
s3fs, and returned corrupt bytes under DuckDB's threads with pyarrow's S3 behind fsspec's
``ArrowFSWrapper`` (its file objects seek and read separately, which threads sharing one race).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sinks.offline.table_format import EVENT_TIME_NS

NAME_MAPPING_PROPERTY = "schema.name-mapping.default"


class NotDirectlyReadable(Exception):
    """This read cannot be handed to DuckDB as files (the message says why); read via pyiceberg."""


@dataclass(frozen=True)
class FilePlan:
    """The files one read opens and, per view column, the field id it comes from (None: absent)."""

    paths: tuple[str, ...]
    field_ids: tuple[int | None, ...]  # per view column, in view order (the event time's: None)
    field_types: Mapping[int, str]  # field id → DuckDB type its Iceberg type reads as
    field_names: Mapping[int, str]  # field id → its name in the scan's schema
    arrow_schema: Any  # pyarrow schema of the fields read, as pyiceberg maps their types
    names_stable: bool  # no field id ever had another name (so matching by name = by id)
    event_time_index: int  # the view column that is the event time, read from _event_time_ns
    event_time_ns_id: int

    @property
    def on_s3(self) -> bool:
        return any(p.startswith("s3://") for p in self.paths)


def duckdb_type(iceberg_type: Any) -> str:
    """The DuckDB type an Iceberg column is read as (types featurestream's tables can hold)."""
    from pyiceberg.types import (
        BooleanType,
        DoubleType,
        FloatType,
        IntegerType,
        ListType,
        LongType,
        StringType,
        TimestampType,
        TimestamptzType,
    )

    scalar = {TimestamptzType: "TIMESTAMPTZ", TimestampType: "TIMESTAMP", StringType: "VARCHAR",
              LongType: "BIGINT", IntegerType: "INTEGER", DoubleType: "DOUBLE", FloatType: "FLOAT",
              BooleanType: "BOOLEAN"}
    for cls, name in scalar.items():
        if isinstance(iceberg_type, cls):
            return name
    if isinstance(iceberg_type, ListType):
        return duckdb_type(iceberg_type.element_type) + "[]"
    raise NotDirectlyReadable(f"column type {iceberg_type} is not mapped to a DuckDB type here")


def _bare_path(path: str) -> str:
    if path.startswith("file://"):
        return path[len("file://"):]
    if path.startswith("s3a://"):
        return "s3://" + path[len("s3a://"):]
    if path.startswith("s3://") or "://" not in path:
        return path
    raise NotDirectlyReadable(f"data file {path!r} has a scheme DuckDB is not given a filesystem for")


def plan_file_read(table: Any, snapshot_id: int, row_filter: Any, view_names: list[str],
                   event_time_name: str) -> FilePlan:
    """Plan the scan of ``table`` at ``snapshot_id`` with ``row_filter`` (partition and statistics
    pruning) and map each view column to its field id in the scan's schema (the snapshot's)."""
    if table.metadata.properties.get(NAME_MAPPING_PROPERTY):
        raise NotDirectlyReadable("the table has a name mapping (files without field ids may be in it)")
    scan = table.scan(row_filter=row_filter, snapshot_id=snapshot_id)
    paths = []
    for task in scan.plan_files():
        if task.delete_files:
            raise NotDirectlyReadable(f"data file {task.file.file_path} has {len(task.delete_files)} delete file(s)")
        fmt = str(getattr(task.file.file_format, "value", task.file.file_format)).upper()
        if fmt != "PARQUET":
            raise NotDirectlyReadable(f"data file {task.file.file_path} is {fmt}, not Parquet")
        paths.append(_bare_path(task.file.file_path))
    schema = scan.projection()
    by_name = {f.name: f for f in schema.fields}
    if EVENT_TIME_NS not in by_name:
        raise NotDirectlyReadable(f"the table has no {EVENT_TIME_NS} column")
    if event_time_name not in view_names:
        raise NotDirectlyReadable(f"the view has no event-time column {event_time_name!r}")
    ids: list[int | None] = []
    types: dict[int, str] = {}
    for name in view_names:
        if name == event_time_name:
            ids.append(None)
            continue
        field = by_name.get(name)
        ids.append(None if field is None else field.field_id)
        if field is not None:
            types[field.field_id] = duckdb_type(field.field_type)
    et_id = by_name[EVENT_TIME_NS].field_id
    types[et_id] = "BIGINT"
    from pyiceberg.io.pyarrow import schema_to_pyarrow

    read = schema.select(*(f.name for f in schema.fields if f.field_id in types))
    names = {f.field_id: f.name for f in read.fields}
    return FilePlan(tuple(paths), tuple(ids), types, names, schema_to_pyarrow(read, include_field_ids=False),
                    _names_stable(table), view_names.index(event_time_name), et_id)


def _names_stable(table: Any) -> bool:
    """True if, over every schema the table has had, each field id kept one name and each name one id."""
    id_name: dict[int, str] = {}
    name_id: dict[str, int] = {}
    for schema in table.metadata.schemas:
        for f in schema.fields:
            if id_name.setdefault(f.field_id, f.name) != f.name or name_id.setdefault(f.name, f.field_id) != f.field_id:
                return False
    return True


def read_parquet_source(plan: FilePlan) -> tuple[str, dict[int, str]]:
    """``read_parquet`` of the plan's (local) files with columns bound by field id: the FROM
    item, and the column each field id reads as."""
    fields = ", ".join(f"{fid}: {{name: {_literal(f'__c{fid}')}, type: {_literal(t)}, default_value: NULL}}"
                       for fid, t in sorted(plan.field_types.items()))
    files = ", ".join(_literal(p) for p in plan.paths)
    return (f"read_parquet([{files}], schema=MAP {{{fields}}})",
            {fid: f"__c{fid}" for fid in plan.field_types})


def s3_dataset(plan: FilePlan, io_properties: Mapping[str, str]) -> tuple[Any, dict[int, str]]:
    """A pyarrow dataset of the plan's ``s3://`` files over pyarrow's S3 client, with the plan's
    fields (files that predate one read it as nulls), and the column each field id reads as."""
    if not plan.names_stable:
        raise NotDirectlyReadable("a field id had another name in an older schema (a rename); a dataset "
                                  "matches columns by name")
    import pyarrow.dataset as ds
    from pyiceberg.io.pyarrow import PyArrowFileIO

    fs = PyArrowFileIO(dict(io_properties)).fs_by_scheme("s3", None)
    dataset = ds.dataset([p[len("s3://"):] for p in plan.paths], schema=plan.arrow_schema, format="parquet",
                         filesystem=fs)
    return dataset, {fid: _quote(name) for fid, name in plan.field_names.items()}


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def files_relation_sql(plan: FilePlan, columns: list[tuple[str, str]], from_sql: str, refs: Mapping[int, str],
                       upper_ns: int | None, lower_ns: int | None, *, event_time_ns_as: str | None = None) -> str:
    """A parenthesised SELECT over ``from_sql`` (the plan's files, ``refs`` naming the column of
    each field id) with the view's ``columns`` ((quoted SQL name, DuckDB type) in view order) and
    the rows with ``lower_ns <= event time <= upper_ns``; ``event_time_ns_as``: plus a last column
    of that name, the stored event time in ns as it is (no TIMESTAMPTZ_NS round trip)."""
    et_ns = refs[plan.event_time_ns_id]
    selects = []
    for i, ((name, typ), fid) in enumerate(zip(columns, plan.field_ids, strict=True)):
        if i == plan.event_time_index:
            value = f"make_timestamp_ns({et_ns})"  # a TIMESTAMP_NS; the connection's zone is UTC
        elif fid is None:
            value = "NULL"
        else:
            value = refs[fid]
        selects.append(f"CAST({value} AS {typ}) AS {name}")
    if event_time_ns_as is not None:
        selects.append(f"{et_ns} AS {event_time_ns_as}")
    where = []
    if upper_ns is not None:
        where.append(f"{et_ns} <= {int(upper_ns)}")
    if lower_ns is not None:
        where.append(f"{et_ns} >= {int(lower_ns)}")
    sql = f"(SELECT {', '.join(selects)} FROM {from_sql}"
    return sql + (f" WHERE {' AND '.join(where)})" if where else ")")
