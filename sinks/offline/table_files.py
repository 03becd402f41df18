"""Uploading rows as a table's Parquet data files, without committing them (the "storage" step).

pyiceberg's public ``Table.append`` uploads and commits in one call; the sink needs the two
apart (offsets are checked between them, and crash tests stop the process in between), so this
module is the one place that calls pyiceberg's file writer, ``_dataframe_to_data_files``. It
splits rows by the table's partition spec (day of the event time) and by the target file size.
"""

from __future__ import annotations

import uuid
from typing import Any

import pyarrow as pa
from pyiceberg.io.pyarrow import _dataframe_to_data_files
from pyiceberg.table import Table

from sinks.offline.errors import OfflineStorageError
from sinks.offline.fs import STORAGE_EXCEPTIONS


def write_data_files(table: Table, rows: pa.Table) -> list[Any]:
    """Upload ``rows`` (table shape) as new data files of ``table``; returns their DataFiles."""
    if rows.num_rows == 0:
        return []
    try:
        return list(_dataframe_to_data_files(table_metadata=table.metadata, df=rows, io=table.io,
                                             write_uuid=uuid.uuid4()))
    except STORAGE_EXCEPTIONS as exc:
        raise OfflineStorageError(f"table {table.name()}: uploading {rows.num_rows} rows under "
                                  f"{table.location()} failed: {type(exc).__name__}: {exc} "
                                  "(is the S3 server up and FEATURESTREAM_S3_ENDPOINT_URL right?)") from exc
