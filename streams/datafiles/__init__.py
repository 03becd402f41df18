"""Reading the data files users ingest: CSV, JSON Lines and Parquet.

``FileRows`` reads a file with its group's schema, exactly and row by row (for publishing);
``read_frame`` reads one whole into pandas (for inferring definitions only).
"""

from streams.datafiles.cells import CellError, RecordReader
from streams.datafiles.formats import FORMATS, DataFileError, detect_format
from streams.datafiles.frame import read_frame
from streams.datafiles.rows import FileRows

__all__ = ["FORMATS", "CellError", "DataFileError", "FileRows", "RecordReader", "detect_format", "read_frame"]
