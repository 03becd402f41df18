"""Which format a data file is in, and the error every file reader raises."""

from __future__ import annotations

from pathlib import Path

from schemas.errors import FeatureStoreError

FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl", ".ndjson": "jsonl",
           ".json": "jsonl"}


class DataFileError(FeatureStoreError):
    """An input file is missing, unreadable, not in a supported format, or its header does not fit the group."""

    def __init__(self, message: str, *, group: str | None = None, feature: str | None = None) -> None:
        super().__init__(message)
        self.group = group
        self.feature = feature


def detect_format(path: Path, fmt: str | None = None) -> str:
    if fmt:
        if fmt not in ("csv", "parquet", "jsonl"):
            raise DataFileError(f"unknown format {fmt!r}; use csv, parquet or jsonl")
        return fmt
    found = FORMATS.get(path.suffix.lower())
    if found is None:
        raise DataFileError(f"cannot tell the format of {str(path)!r} from its extension; name it .csv, .parquet "
                            "or .jsonl, or pass --format")
    return found


def check_path(path: str | Path) -> Path:
    """``path`` as a Path, once it is known to be an existing regular file."""
    path = Path(path)
    if not path.exists():
        raise DataFileError(f"input file {str(path)!r} does not exist")
    if path.is_dir():
        raise DataFileError(f"input {str(path)!r} is a directory, not a file")
    return path
