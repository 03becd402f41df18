"""Reading the data files users hand to the CLI: CSV, Parquet and JSON Lines."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from schemas.errors import FeatureStoreError

FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl", ".ndjson": "jsonl",
           ".json": "jsonl"}


class DataFileError(FeatureStoreError):
    """An input file is missing, unreadable or not in a supported format."""


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


def read_frame(path: str | Path, *, fmt: str | None = None, string_columns: set[str] | None = None) -> Any:
    """Read ``path`` into a pandas DataFrame; ``string_columns`` are read as text (keeps '007' as is)."""
    import pandas as pd

    path = Path(path)
    if not path.exists():
        raise DataFileError(f"input file {str(path)!r} does not exist")
    if path.is_dir():
        raise DataFileError(f"input {str(path)!r} is a directory, not a file")
    kind = detect_format(path, fmt)
    try:
        if kind == "csv":
            dtype = {c: "string" for c in (string_columns or ())}
            return pd.read_csv(path, dtype=dtype or None, keep_default_na=True)
        if kind == "parquet":
            return pd.read_parquet(path)
        frame = pd.read_json(path, lines=True, dtype=False, convert_dates=False)
        for c in string_columns or ():
            if c in frame.columns:
                frame[c] = frame[c].astype("string")
        return frame
    except (ValueError, OSError, UnicodeDecodeError) as exc:
        raise DataFileError(f"cannot read {str(path)!r} as {kind}: {exc}") from exc
    except Exception as exc:  # pandas/pyarrow raise many parser-specific types
        raise DataFileError(f"cannot read {str(path)!r} as {kind}: {type(exc).__name__}: {exc}") from exc
