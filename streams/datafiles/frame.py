"""A whole data file as a pandas DataFrame, for inferring a group's definitions from a sample.

Only ``group create --infer-from`` uses this: pandas guesses column types, which is what
inference wants. Publishing never reads values this way (pandas reads floats imprecisely and
turns integer columns with an empty cell into float64); it reads files with the group's own
schema, row by row (``streams.datafiles.rows``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from streams.datafiles.formats import DataFileError, check_path, detect_format


def read_frame(path: str | Path, *, fmt: str | None = None, string_columns: set[str] | None = None) -> Any:
    """Read ``path`` into a pandas DataFrame; ``string_columns`` are read as text (keeps '007' as is)."""
    import pandas as pd

    path = check_path(path)
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
