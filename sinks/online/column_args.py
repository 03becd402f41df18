"""write_if_newer.lua's arguments for a batch's proven rows, built from its Arrow columns.

The batch path's counterpart of :func:`sinks.online.store.write_script_args` (which stays for the
rows that go the per-record way): the same arguments, byte for byte, with no Python message object
per row. ``schemas.batch`` proved every row given here, so nothing is checked again:

- ARGV 1 op, from ``is_delete`` and ``mode``; 2..4 the version key of ``schemas/ordering.py``
  (event time, partition, offset) as canonical decimals, by Arrow's integer cast (``str(int)``'s digits);
- 5..7 expiry: ``expires_at = event time + TTL`` (the record's TTL, else the group's; soft deletes
  the group's; hard deletes none) in int64 vector code, computed by Python's integers only for a
  row whose sum would overflow int64 (``sinks/online/expiry.py`` says what the values mean);
- 8 the schema version the message carries (its header);
- 9 a put's fields, ``pack_checked_features``'s JSON array ``["name","<value JSON>",...]`` in the
  group's feature order, nulls left out: each value's text is orjson's (``schemas/column_json.py``),
  then escaped once more as a JSON string. A Fractional event-time value is the one exception: the
  columns hold a double where the message may have held the integer ``1633176000`` (kept as given by
  the validator, so stored as ``1633176000``), so its texts come from the caller
  (``event_time_texts``), read from the messages themselves.

``tests/unit/test_online_column_args.py`` holds the two builders to the same output on random
batches of good and bad rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from schemas.batch import BatchColumns
from schemas.column_checks import holds_json_escapes, list_parts
from schemas.column_json import (
    TEXT,
    concat,
    element_texts,
    json_floats,
    json_ints,
    json_lists,
    json_strings,
    lit,
)
from schemas.group import FeatureGroup
from schemas.messages import HARD_DELETE
from schemas.names import online_key
from schemas.types import INT64_MAX, ScalarType
from sinks.online.expiry import NS_PER_MS, NS_PER_SECOND, expires_at_ns, ns_to_expire_ms
from sinks.online.script_calls import STRIDE, ScriptCalls

_KIND = {ScalarType.STRING: "str", ScalarType.INTEGRAL: "int", ScalarType.FRACTIONAL: "float"}
_EMPTY = lit("")


def column_script_calls(group: FeatureGroup, cols: BatchColumns, rows: np.ndarray, partitions: np.ndarray,
                        offsets: np.ndarray, *, prefix: str, now_ns: int,
                        event_time_texts: Sequence[str | None] | None = None) -> ScriptCalls:
    """The script calls of ``cols``' rows ``rows`` (proven, targeting the online store), in that order.

    ``partitions``/``offsets`` are per selected row. ``event_time_texts`` (per selected row, JSON
    text of the event-time value as the message gave it; None for deletes) is required when the
    group's event-time feature is Fractional."""
    n = len(rows)
    if n == 0:
        return ScriptCalls([], [], [])
    if group.event_time.type is ScalarType.FRACTIONAL and (event_time_texts is None or len(event_time_texts) != n):
        raise ValueError(f"feature group {group.name!r}: its event time is Fractional, so the event-time texts "
                         f"of the {n} rows must be given (the columns hold doubles, not the values as given)")
    take = pa.array(rows, pa.int64())
    is_delete = cols.is_delete[rows]
    ids: list[str] = cols.id.take(take).to_numpy(zero_copy_only=False).tolist()
    et = cols.event_time_ns[rows]
    out = np.empty((n, STRIDE), dtype=object)
    hard = is_delete & _np_equal(cols.mode.take(take), HARD_DELETE)
    out[:, 0] = np.where(is_delete, np.where(hard, "hard", "soft"), "put")
    out[:, 1] = _decimals(et)
    out[:, 2] = _decimals(partitions)
    out[:, 3] = _decimals(offsets)
    _expiry(group, cols, take, is_delete, hard, et, now_ns, out)
    out[:, 7] = _decimals(cols.schema_version[rows])
    out[:, 8] = _fields(group, cols.record.take(take), is_delete, event_time_texts)
    out[:, 9] = group.life
    head = online_key(prefix, group.name, "")
    return ScriptCalls(ids, [head + i for i in ids], out.ravel().tolist())


def _np_equal(arr: pa.Array, value: str) -> np.ndarray:
    return np.asarray(pc.fill_null(pc.equal(arr, value), False).to_numpy(zero_copy_only=False), dtype=bool)


def _decimals(values: np.ndarray) -> np.ndarray:
    """``str(int(v))`` of each value, as an object array of str."""
    return pc.cast(pa.array(np.asarray(values, dtype=np.int64)), pa.string()).to_numpy(zero_copy_only=False)


def _expiry(group: FeatureGroup, cols: BatchColumns, take: pa.Array, is_delete: np.ndarray, hard: np.ndarray,
            et: np.ndarray, now_ns: int, out: np.ndarray) -> None:
    """ARGV 5..7: expired flag, expires-at ns and ms (``""`` where no TTL applies)."""
    group_ttl = group.ttl.seconds if group.ttl is not None else None
    ttl_col = cols.ttl_seconds.take(take)
    record_ttl = np.asarray(pc.fill_null(ttl_col, -1).to_numpy(zero_copy_only=False), dtype=np.int64)
    # a put: its own TTL, else the group's; a soft delete: the group's; a hard delete: none
    ttl = np.where(is_delete | (record_ttl < 0), -1 if group_ttl is None else group_ttl, record_ttl)
    ttl = np.where(hard, -1, ttl)
    has = ttl > 0
    if not has.any():
        out[:, 4] = "0"
        out[:, 5] = ""
        out[:, 6] = ""
        return
    # et + ttl * 1e9 must stay within int64; a row beyond it is computed with Python's integers
    room = (INT64_MAX - et) // NS_PER_SECOND
    wide = has & (ttl > room)
    fits = has & ~wide
    expires = np.where(fits, et + np.where(fits, ttl, 0) * NS_PER_SECOND, 0)
    ms = -((-expires) // NS_PER_MS)
    out[:, 4] = np.where(fits & (expires <= now_ns), "1", "0")
    out[:, 5] = np.where(fits, _decimals(expires), "")
    out[:, 6] = np.where(fits, _decimals(ms), "")
    for i in np.flatnonzero(wide):
        exp = expires_at_ns(int(et[i]), int(ttl[i]), None)
        assert exp is not None  # ttl > 0 here
        out[i, 4] = "1" if exp <= now_ns else "0"
        out[i, 5] = str(exp)
        out[i, 6] = str(ns_to_expire_ms(exp))


def _fields(group: FeatureGroup, record: pa.StructArray, is_delete: np.ndarray,
            event_time_texts: Sequence[str | None] | None) -> np.ndarray:
    """ARGV 9: each put's ``pack_checked_features`` bytes; ``""`` for deletes."""
    rtype = record.type
    children = dict(zip([rtype.field(i).name for i in range(rtype.num_fields)], record.flatten(), strict=True))
    pieces = []
    for fd in group.features:
        col = children[fd.name]
        if fd.type is ScalarType.STRING and fd.collection is None and not _needs_escapes(col):
            # the usual text: nothing to escape, so its JSON text is itself in quotes, and inside the
            # array those quotes are escaped: ,"name","\"text\""
            pieces.append(concat(lit(f',"{fd.name}","\\"'), pc.cast(col, TEXT), lit('\\""')))
            continue
        if fd.name == group.event_time_name and fd.type is ScalarType.FRACTIONAL:
            text = pa.array(event_time_texts, TEXT)
        else:
            text = _json_texts(fd.type, fd.collection is not None, col)
        if fd.type is ScalarType.STRING:
            # the value's JSON text (quoted) is, itself a JSON string inside the array: escape it again
            text = pc.replace_substring(pc.replace_substring(text, "\\", "\\\\"), '"', '\\"')
        pieces.append(concat(lit(f',"{fd.name}","'), text, lit('"')))  # null where the value is null
    joined = pc.binary_join_element_wise(*pieces, _EMPTY, null_handling="replace", null_replacement="")
    packed = concat(lit("["), pc.utf8_slice_codeunits(joined, 1), lit("]"))
    texts = pc.cast(packed, pa.large_binary()).to_numpy(zero_copy_only=False)
    return np.where(is_delete, "", texts)


def _needs_escapes(col: Any) -> bool:
    """Whether some text of ``col`` holds a character JSON escapes (quote, backslash, control)."""
    return holds_json_escapes(col)


def _json_texts(scalar: ScalarType, collection: bool, col: Any) -> Any:
    if collection:
        values, _lengths, _parents = list_parts(col)
        return json_lists(col, element_texts(values, _KIND[scalar]))
    if scalar is ScalarType.STRING:
        return json_strings(col)
    if scalar is ScalarType.INTEGRAL:
        return json_ints(col)
    return json_floats(col)
