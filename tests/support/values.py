"""Support for the exact-value property tests (no tests here): hypothesis strategies for random
groups and records full of edge values, every input form built from those records, and a
bit-for-bit comparison (floats by their IEEE bytes, so -0.0 differs from 0.0).
"""

from __future__ import annotations

import struct
import sys
from pathlib import Path
from typing import Any

import orjson
from hypothesis import strategies as st

from schemas.eventtime import format_iso
from schemas.group import FeatureGroup
from schemas.types import INT64_MAX, INT64_MIN, CollectionType, FeatureDefinition, ScalarType

INT_EDGES = [INT64_MIN, INT64_MIN + 1, INT64_MAX, INT64_MAX - 1, 2**53 - 1, 2**53, 2**53 + 1, -(2**53) - 1,
             -(2**53), 0, -1, 7]
FLOAT_EDGES = [0.0, -0.0, 5e-324, -5e-324, 2.225073858507201e-308, 2.2250738585072014e-308, sys.float_info.max,
               -sys.float_info.max, 5.81, 0.1, 1 / 3, 9007199254740992.0, 123456789012345680.0, 1e-300]
STRING_EDGES = ["007", '"', '""', ",", 'a,"b",c', "x\ny", "x\r\ny", "\r", "\t", "😀", " lead", "trail ", "NA",
                "null", "NaN", "\\", "'", "\u2028", "=1+1", "\x00", "é"]

ints = st.one_of(st.sampled_from(INT_EDGES), st.integers(INT64_MIN, INT64_MAX))
# Doubles written with 17 significant digits: the most a double needs, and where imprecise
# parsers (pandas' default JSON reader) go wrong.
seventeen_digits = st.builds(lambda m, e: float(f"{m}e{e}"), st.integers(10**16, 10**17 - 1),
                             st.integers(-330, 290))
floats = st.one_of(st.sampled_from(FLOAT_EDGES), st.floats(allow_nan=False, allow_infinity=False),
                   seventeen_digits)
texts = st.one_of(st.sampled_from(["", *STRING_EDGES]),
                  st.text(st.characters(blacklist_categories=("Cs",)), max_size=12))
ids_text = st.one_of(st.sampled_from(STRING_EDGES), st.text(st.characters(blacklist_categories=("Cs",)),
                                                            min_size=1, max_size=12))
iso_times = st.integers(0, 4_102_444_800 * 10**9).map(format_iso)
epoch_seconds = st.floats(min_value=0.0, max_value=4_102_444_800.0)
SCALARS = {ScalarType.STRING: texts, ScalarType.INTEGRAL: ints, ScalarType.FRACTIONAL: floats}

KINDS = [("String", None, None), ("Integral", None, None), ("Fractional", None, None), ("String", "List", None),
         ("Integral", "List", None), ("Fractional", "List", None), ("String", "Set", None),
         ("Integral", "Set", None), ("Fractional", "Set", None), ("Fractional", "Vector", 1),
         ("Fractional", "Vector", 3)]


@st.composite
def groups(draw: Any, name: str = "g") -> FeatureGroup:
    kinds = draw(st.lists(st.sampled_from(KINDS), min_size=1, max_size=6))
    feats = [FeatureDefinition("rid", draw(st.sampled_from(["String", "Integral"]))),
             FeatureDefinition("et", draw(st.sampled_from(["String", "Fractional"])))]
    feats += [FeatureDefinition(f"f{i}", t, c, d) for i, (t, c, d) in enumerate(kinds)]
    return FeatureGroup(name, "rid", "et", tuple(feats))


def value_of(fd: FeatureDefinition) -> st.SearchStrategy[Any]:
    scalar = SCALARS[fd.type]
    if fd.collection is None:
        return scalar
    if fd.collection is CollectionType.VECTOR:
        return st.lists(floats, min_size=fd.dimension, max_size=fd.dimension)
    return st.lists(scalar, max_size=4, unique=fd.collection is CollectionType.SET)


@st.composite
def record(draw: Any, group: FeatureGroup) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for fd in group.features:
        if fd.name == group.record_identifier_name:
            out[fd.name] = draw(ints if fd.type is ScalarType.INTEGRAL else ids_text)
        elif fd.name == group.event_time_name:
            out[fd.name] = draw(iso_times if fd.type is ScalarType.STRING else epoch_seconds)
        else:
            out[fd.name] = draw(st.one_of(st.none(), value_of(fd)))
    return out


def records(group: FeatureGroup, max_size: int = 5) -> st.SearchStrategy[list[dict[str, Any]]]:
    """Records with distinct identifiers (so each is the latest of its id everywhere)."""
    return st.lists(record(group), min_size=1, max_size=max_size, unique_by=lambda r: str(r["rid"]))


# ------------------------------------------------------------------ input forms

def _arrow_type(fd: FeatureDefinition) -> Any:
    import pyarrow as pa

    scalar = {ScalarType.STRING: pa.string(), ScalarType.INTEGRAL: pa.int64(),
              ScalarType.FRACTIONAL: pa.float64()}[fd.type]
    return scalar if fd.collection is None else pa.list_(scalar)


def as_arrow(group: FeatureGroup, recs: list[dict[str, Any]]) -> Any:
    import pyarrow as pa

    return pa.table({fd.name: pa.array([r[fd.name] for r in recs], _arrow_type(fd)) for fd in group.features})


def as_frame(group: FeatureGroup, recs: list[dict[str, Any]], flavour: str) -> Any:
    """A DataFrame with pandas' nullable dtypes (``nullable``) or pyarrow-backed ones (``arrow``)."""
    import pandas as pd

    columns = {}
    for fd in group.features:
        values = [r[fd.name] for r in recs]
        if flavour == "arrow":
            columns[fd.name] = pd.array(values, dtype=pd.ArrowDtype(_arrow_type(fd)))
        elif fd.collection is not None:
            columns[fd.name] = pd.Series(values, dtype=object)
        else:
            dtype = {ScalarType.STRING: "string", ScalarType.INTEGRAL: "Int64", ScalarType.FRACTIONAL: "Float64"}
            columns[fd.name] = pd.array(values, dtype=dtype[fd.type])
    return pd.DataFrame(columns)


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""  # an empty cell is no value; "" (quoted) is the empty string
    if isinstance(value, str):
        return '"' + value.replace('"', '""') + '"'
    if isinstance(value, list):
        return '"' + orjson.dumps(value).decode().replace('"', '""') + '"'
    return repr(value)  # shortest text that reads back as the same double; str of an int


def write_csv(path: Path, group: FeatureGroup, recs: list[dict[str, Any]]) -> Path:
    names = group.feature_names
    lines = [",".join(names)] + [",".join(_csv_cell(r[n]) for n in names) for r in recs]
    path.write_bytes(("\r\n".join(lines) + "\r\n").encode("utf-8"))
    return path


def write_jsonl(path: Path, recs: list[dict[str, Any]]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in recs))
    return path


def write_parquet(path: Path, group: FeatureGroup, recs: list[dict[str, Any]]) -> Path:
    import pyarrow.parquet as pq

    pq.write_table(as_arrow(group, recs), path)
    return path


# ------------------------------------------------------------------ comparison

def _same(a: Any, b: Any) -> bool:
    if type(a) is float or type(b) is float:
        return type(a) is type(b) and struct.pack("<d", a) == struct.pack("<d", b)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def assert_same_record(group: FeatureGroup, expected: dict[str, Any], got: dict[str, Any], where: str,
                       skip: tuple[str, ...] = ()) -> None:
    """Every feature of ``expected`` equals ``got``'s bit for bit; an absent feature counts as null."""
    for fd in group.features:
        if fd.name in skip:
            continue
        want, have = expected.get(fd.name), got.get(fd.name)
        assert _same(want, have), (f"{where}: feature {fd.name!r} ({fd.describe()}) was {want!r}, came back "
                                   f"as {have!r}")
