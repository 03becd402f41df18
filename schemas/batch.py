"""Batches of group-topic messages as Arrow columns, with the group's checks compiled to vector code.

Pure, like the rest of ``schemas/``: bytes in, columns and a mask out. Both pipelines use it.

**The shape.** :func:`decode_batch` turns the values of one group's messages into one Arrow table
in ONE C++ call: a featurestream value is a JSON object without newlines (docs/wire-format.md),
so the batch, each value wrapped as ``{"v":<value>}`` and joined by newlines, is NDJSON, read by
``pyarrow.json.read_json`` with an explicit schema derived from the group (:func:`envelope_type`)
and ``unexpected_field_behavior="error"``. The wrapper makes every line exactly one row or an
error (a value like ``{}{}`` or an empty one cannot shift the rows). Columns of
:class:`BatchColumns`: ``op``, ``id``, ``event_time_ns``, ``record`` (a struct, one child per
feature, in the group's order and types), ``ttl_seconds``, ``mode`` and the delete's
``event_time``, then ``online``/``offline`` (the target stores, resolved), and from the headers
``schema_version`` and ``api_invocation_time_ns``.

**Exactness: what Arrow cannot prove goes to the per-record path.** ``fast[i]`` is true only for a
row that the vectorized checks PROVE decodes (``schemas.wire.decode``) and conforms
(``check_against_group``) with the very values the columns hold. Every other row is left to the
caller's per-record path, which gives the exact reason. What the checks rely on (each checked,
and pinned by tests/unit/test_batch_decode.py):

- Arrow's reader refuses a JSON type that differs from the schema's (a number for a String
  feature, ``"42"`` or ``42.0`` for an Integral one, ``true`` anywhere), an integer beyond int64
  (it never becomes a double), a duplicate key, a lone surrogate, a control character and an
  unknown field (nested too). A refused batch is cut at the row the error names, or split in
  halves when it names none, until the refused rows are isolated (:func:`_parse`); those rows are
  not fast.
- It parses doubles correctly rounded, as orjson does (a hypothesis test compares them bit for
  bit), but accepts ``NaN``/``Infinity`` where orjson refuses the whole value: every double is
  checked finite, and a delete (whose record orjson would parse and ignore) is fast only without
  a record. The JSON integer ``-0`` is -0.0 to Arrow but int 0 (so +0.0) to the validator: a
  negative zero is never proven (found by the hypothesis test).
- It does not validate UTF-8: the batch is checked (ASCII at C speed, else decoded) first.
- JSON ``null`` and an absent field look alike in Arrow; rows where the difference matters
  (a delete's ``mode``, a put's ``record``) are fast only when the field is there.
- Headers come from Python objects anyway; they are read in one tight loop, and any header that
  is not plain (``fs-format: json/1`` or absent, decimal versions) leaves its row to the per-record
  path. A row stamped with a NEWER version than ``group`` is never fast: the per-record judgement
  decides whether that means "fetch the newer definition" or poison (``streams.route``).
- Event times are proven only in the canonical forms: ISO text ``YYYY-MM-DDTHH:MM:SS[.f{1,9}]Z``
  (calendar, range and nanoseconds computed in int64 vector code) or, for a Fractional event-time
  feature, whole seconds. Other forms (offsets, epoch text, fractional seconds) are valid but go
  the per-record way.
- Sizes: the per-record validator's own size estimates are computed as upper bounds; a row over
  a limit by the estimate goes per record, where the exact size decides.

**Using the columns.** Rows where ``fast`` is false hold unspecified values. The offline sink
(``sinks/offline/columns.py``) selects the fast rows that target it and turns the struct's
children into its table's columns without a Python object per row. The online processor can build
its Redis script arguments from the same columns: ``id`` (the key), ``event_time_ns`` and
``api_invocation_time_ns`` (the version order of ``schemas.ordering``), ``op == "delete"`` and
``mode``, ``ttl_seconds`` (null: the group's TTL), and the record's values per feature: one
``pc.cast(child, pa.string())`` or one vectorized JSON encode per feature column, with
``is_null`` giving the nulls, instead of a dict per record. One caveat for it: a Fractional
event-time value is a double here, so a put that gave it as a JSON integer (``1633176000``)
and one that gave ``1633176000.0`` look alike; the event-time value stored online must then be
re-rendered the way ``schemas.validate`` keeps it (an integral double: as given), or taken from the
per-record path.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from schemas.column_checks import iso_utc_to_ns, one_array
from schemas.group import FeatureGroup
from schemas.messages import HARD_DELETE, OFFLINE, ONLINE, SOFT_DELETE
from schemas.names import MAX_RECORD_BYTES, MAX_RECORD_ID_BYTES, MAX_VALUE_BYTES
from schemas.ttl import MAX_TTL_SECONDS
from schemas.types import CollectionType, FeatureDefinition, ScalarType
from schemas.validate import FLOAT_TEXT_MAX

H_FORMAT = "fs-format"
H_SCHEMA_VERSION = "fs-schema-version"
H_API_TIME = "fs-api-invocation-time"
_FORMAT_BYTES = b"json/1"
_FORMAT_PAIR = (H_FORMAT, _FORMAT_BYTES)
_SCALAR = {ScalarType.STRING: pa.string(), ScalarType.INTEGRAL: pa.int64(), ScalarType.FRACTIONAL: pa.float64()}
# A decimal Integral identifier as str(int) writes it (so str(int(id)) == id).
_CANONICAL_INT_RE = r"^(0|-?[1-9][0-9]{0,17})$"
# The last whole second int64 nanoseconds hold (9223372036 s + 854775807 ns is the last instant).
_MAX_SECONDS = 9_223_372_036
# A refused chunk this small is not split further: its rows all go per record.
_MIN_SPLIT = 1
_ROW_HINT = re.compile(r" in row ([0-9]+)$")


def record_type(group: FeatureGroup) -> pa.StructType:
    """The record struct: one child per feature, in the group's order (the JSON reader's types)."""
    fields = []
    for fd in group.features:
        t = _SCALAR[fd.type]
        fields.append(pa.field(fd.name, t if fd.collection is None else pa.list_(t)))
    return pa.struct(fields)


def envelope_type(group: FeatureGroup) -> pa.StructType:
    """Every field a group message may carry (docs/wire-format.md), typed for ``group``."""
    return pa.struct([
        pa.field("op", pa.string()), pa.field("id", pa.string()), pa.field("event_time_ns", pa.int64()),
        pa.field("record", record_type(group)), pa.field("target_stores", pa.list_(pa.string())),
        pa.field("ttl_seconds", pa.int64()), pa.field("event_time", pa.string()), pa.field("mode", pa.string()),
    ])


@dataclass(frozen=True)
class BatchColumns:
    """One batch of one group, decoded into columns; see the module docstring.

    ``fast[i]``: row i is proven to decode and conform to ``group`` exactly as these columns say.
    Other rows hold unspecified values: judge them per record."""

    group: FeatureGroup
    fast: np.ndarray          # bool, one per message
    is_delete: np.ndarray     # bool
    id: pa.Array              # string
    event_time_ns: np.ndarray  # int64 (0 where not fast)
    record: pa.StructArray    # children per feature; null for deletes
    ttl_seconds: pa.Array     # int64, null: the group's TTL
    mode: pa.Array            # string (deletes)
    online: np.ndarray        # bool: the message targets the online store
    offline: np.ndarray       # bool: the message targets the offline store
    schema_version: np.ndarray  # int64, from fs-schema-version (1 when absent)
    api_invocation_time_ns: np.ndarray  # int64, from fs-api-invocation-time (0 when absent)

    def __len__(self) -> int:
        return len(self.fast)


class _Compiled:
    """What :func:`decode_batch` needs of one group version, built once (like compile_validator)."""

    def __init__(self, group: FeatureGroup) -> None:
        self.group = group
        self.envelope = envelope_type(group)
        self.parse_options = pj.ParseOptions(explicit_schema=pa.schema([pa.field("v", self.envelope)]),
                                             unexpected_field_behavior="error", newlines_in_values=False)
        self.rid = group.record_identifier
        self.et = group.event_time
        self.enabled = group.enabled_stores
        self.plain: list[FeatureDefinition] = [f for f in group.features if f.name not in (self.rid.name,
                                                                                            self.et.name)]


def compile_batch(group: FeatureGroup) -> _Compiled:
    """The compiled batch plan of ``group``, kept on the (immutable) group object."""
    c = group.__dict__.get("_batch_plan")
    if c is None:
        c = _Compiled(group)
        object.__setattr__(group, "_batch_plan", c)
    return c


# ---------------------------------------------------------------- parsing

class _Refused(Exception):
    """The reader's rows do not line up with the input lines."""


def _read(plan: _Compiled, lines: Sequence[bytes]) -> pa.StructArray:
    buf = b'{"v":' + b'}\n{"v":'.join(lines) + b'}\n'
    # One block: rows never straddle blocks; one thread: the machine's cores are shared.
    opts = pj.ReadOptions(use_threads=False, block_size=max(len(buf) + 1, 1 << 16))
    table = pj.read_json(pa.BufferReader(buf), read_options=opts, parse_options=plan.parse_options)
    if table.num_rows != len(lines):
        raise _Refused
    return one_array(table.column(0))


def _parse(plan: _Compiled, lines: list[bytes], refused: np.ndarray) -> pa.StructArray:
    """All rows in one call; a refused batch is cut at the row the error names (or halved when it
    names none) until its refused rows are isolated.

    A call costs about 0.15 ms however few its rows, as much as judging a dozen rows per record, so
    the cutting is worth it only while refused rows are sparse: after ``1 + 2·log2(n) + n/64``
    calls, what is still unparsed goes per record whole (a poison storm costs at most a few µs a row more than
    the per-record path; a lone bad row costs a few calls)."""
    n = len(lines)
    if n == 0:
        return pa.array([], plan.envelope)
    parts: list[pa.Array] = []
    budget = 1 + 2 * n.bit_length() + n // 64  # calls: enough to halve down to one row, and some

    def refuse(lo: int, hi: int) -> None:
        refused[lo:hi] = True
        parts.append(pa.nulls(hi - lo, plan.envelope))

    def go(lo: int, hi: int) -> None:
        nonlocal budget
        if lo >= hi:
            return
        if budget <= 0:
            refuse(lo, hi)
            return
        budget -= 1
        try:
            parts.append(_read(plan, lines[lo:hi]))
            return
        except (pa.ArrowException, _Refused) as exc:
            hint = _ROW_HINT.search(str(exc))
        if hi - lo <= _MIN_SPLIT:
            refuse(lo, hi)
            return
        # A parse error names its row (the chunk is one block): the rows before it parsed. Marking
        # that row refused is safe even if the hint were wrong (it only goes per record).
        bad = lo + int(hint.group(1)) if hint is not None else -1
        if lo <= bad < hi:
            go(lo, bad)
            refuse(bad, bad + 1)
            go(bad + 1, hi)
            return
        mid = (lo + hi) // 2  # a conversion error names no row: halve
        go(lo, mid)
        go(mid, hi)

    if n < PARALLEL_PARSE_MIN_ROWS:
        go(0, n)
    else:
        # Two halves at once: pyarrow's JSON reader lets go of the GIL, so the second half is
        # parsed on another core while this thread parses the first (each half one block, so an
        # error's row number stays exact). A refused half is cut up as before, after the first.
        mid = n // 2
        budget -= 1
        second = _parse_pool().submit(_read_or_none, plan, lines[mid:])
        go(0, mid)
        tail = second.result()
        if tail is not None:
            parts.append(tail)
        else:
            go(mid, n)
    return parts[0] if len(parts) == 1 else pa.concat_arrays(parts)


# A batch this big is parsed in two halves at once. Below it a batch is a steady stream's (the online
# processor's batches at 5,000/s hold ~50), where a second thread's hand-off costs more than it saves.
PARALLEL_PARSE_MIN_ROWS = 2_000
_POOL: dict[int, ThreadPoolExecutor] = {}  # by process id: a forked child does not have its parent's thread
_POOL_LOCK = threading.Lock()


def _parse_pool() -> ThreadPoolExecutor:
    """One thread, made at the first big batch (a process that never sees one never starts it)."""
    pid = os.getpid()
    with _POOL_LOCK:
        pool = _POOL.get(pid)
        if pool is None:
            _POOL.clear()  # a parent's pool, inherited by fork: its thread is not here
            pool = _POOL[pid] = ThreadPoolExecutor(max_workers=1, thread_name_prefix="batch-parse")
        return pool


def _read_or_none(plan: _Compiled, lines: Sequence[bytes]) -> pa.StructArray | None:
    try:
        return _read(plan, lines)
    except (pa.ArrowException, _Refused):
        return None


def _plain_values(values: Sequence[Any], slow: np.ndarray) -> list[bytes]:
    """The values as JSON lines: a row that cannot be one (not bytes, a newline, bad UTF-8) is
    replaced by ``{}`` and marked slow."""
    lines = list(values)
    for i, v in enumerate(lines):
        if type(v) is not bytes:
            slow[i] = True
            lines[i] = b"{}"
    joined = b"".join(lines)
    if b"\n" in joined:
        for i, v in enumerate(lines):
            if b"\n" in v:
                slow[i] = True
                lines[i] = b"{}"
    if not joined.isascii():
        try:
            joined.decode("utf-8")
        except UnicodeDecodeError:
            for i, v in enumerate(lines):
                try:
                    v.decode("utf-8")
                except UnicodeDecodeError:
                    slow[i] = True
                    lines[i] = b"{}"
    return lines


def _headers(headers: Sequence[Any], slow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(schema_version, api_invocation_time_ns) per row; a header that is not plain marks its row slow.

    The doors write the three headers in one order; that shape is read without a loop per header."""
    n = len(headers)
    versions = np.ones(n, dtype=np.int64)
    api = np.zeros(n, dtype=np.int64)
    at_rows: list[int] = []
    vers: list[bytes] = []
    apis: list[bytes] = []
    try:
        doors = _door_shape(headers)
    except TypeError:  # something unhashable or unsized where a header should be: the loop below judges
        doors = None
    if doors is not None:  # every row has the doors' shape: read in C-speed passes, no loop per row
        at_rows, vers, apis = list(range(n)), doors[0], doors[1]
        headers = ()
    for i, h in enumerate(headers):
        if type(h) is list and len(h) == 3 and h[0] == _FORMAT_PAIR:
            b, c = h[1], h[2]
            if type(b) is tuple and type(c) is tuple and b[0] == H_SCHEMA_VERSION and c[0] == H_API_TIME \
                    and type(b[1]) is bytes and type(c[1]) is bytes:
                at_rows.append(i)
                vers.append(b[1])
                apis.append(c[1])
                continue
        _one_header_list(i, h, slow, versions, api)
    if at_rows:
        rows = np.array(at_rows, dtype=np.int64)
        for texts, out, low in ((vers, versions, 1), (apis, api, 0)):
            # bytes.isdigit is ASCII-only. A time from time.time_ns() has 19 digits: up to 19 are
            # taken when the value fits int64 (np.fromiter raises OverflowError past it), as the
            # per-record reader (schemas/wire.py) takes them; anything else goes row by row.
            values = None
            if b"".join(texts).isdigit() and min(map(len, texts)) >= 1 and max(map(len, texts)) <= 19:
                try:
                    values = np.fromiter(map(int, texts), dtype=np.int64, count=len(texts))
                except OverflowError:
                    values = None
            if values is not None:
                out[rows] = values
                slow[rows[values < low]] = True
            else:
                for i, t in zip(at_rows, texts, strict=True):
                    if _fits_int64_text(t) and int(t) >= low:
                        out[i] = int(t)
                    else:
                        slow[i] = True
    return versions, api


def _door_shape(headers: Sequence[Any]) -> tuple[list[bytes], list[bytes]] | None:
    """(version texts, api time texts) if every header list is exactly the doors' three headers in
    their order, with bytes values (what the per-row loop of :func:`_headers` accepts); else None."""
    if not headers or set(map(type, headers)) != {list} or set(map(len, headers)) != {3}:
        return None
    firsts, seconds, thirds = (list(map(itemgetter(k), headers)) for k in range(3))
    if set(firsts) != {_FORMAT_PAIR} or set(map(type, seconds)) != {tuple} or set(map(type, thirds)) != {tuple} \
            or set(map(len, seconds)) != {2} or set(map(len, thirds)) != {2} \
            or set(map(_NAME, seconds)) != {H_SCHEMA_VERSION} or set(map(_NAME, thirds)) != {H_API_TIME}:
        return None
    vers, apis = list(map(_VALUE, seconds)), list(map(_VALUE, thirds))
    if set(map(type, vers)) != {bytes} or set(map(type, apis)) != {bytes}:
        return None
    return vers, apis


_NAME, _VALUE = itemgetter(0), itemgetter(1)
_INT64_MAX_TEXT = str(2**63 - 1).encode()


def _fits_int64_text(t: bytes) -> bool:
    """ASCII digits (1 to 19 of them) whose value fits int64: what the fast path takes of a header."""
    return t.isdigit() and (len(t) < 19 or (len(t) == 19 and t <= _INT64_MAX_TEXT))


def _one_header_list(i: int, h: Any, slow: np.ndarray, versions: np.ndarray, api: np.ndarray) -> None:
    if h is None:
        return
    if type(h) is not list and type(h) is not tuple:
        slow[i] = True
        return
    fmt = ver = at = None
    try:
        for name, value in h:
            if type(name) is not str or (value is not None and type(value) is not bytes):
                raise ValueError
            if name == H_FORMAT:
                fmt = value
            elif name == H_SCHEMA_VERSION:
                ver = value
            elif name == H_API_TIME:
                at = value
    except (TypeError, ValueError):
        slow[i] = True
        return
    if fmt is not None and fmt != _FORMAT_BYTES:
        slow[i] = True
        return
    if ver is not None:
        if not _fits_int64_text(ver) or int(ver) < 1:
            slow[i] = True
            return
        versions[i] = int(ver)
    if at is not None:
        if not _fits_int64_text(at):
            slow[i] = True
            return
        api[i] = int(at)


# ---------------------------------------------------------------- vector helpers

def _np_bool(arr: Any, null: bool = False) -> np.ndarray:
    return np.asarray(pc.fill_null(arr, null).to_numpy(zero_copy_only=False), dtype=bool)


def _np_int(arr: Any) -> np.ndarray:
    return np.asarray(pc.fill_null(arr, 0).to_numpy(zero_copy_only=False), dtype=np.int64)


def _rows_of(parents: np.ndarray, bad: np.ndarray, n: int) -> np.ndarray:
    out = np.zeros(n, dtype=bool)
    out[parents[bad]] = True
    return out


def _list_parts(arr: pa.ListArray) -> tuple[pa.Array, np.ndarray]:
    flat = arr.flatten()
    parents = np.asarray(pc.list_parent_indices(arr).to_numpy(zero_copy_only=False), dtype=np.int64)
    if len(parents) != len(flat):  # never seen; if it were, nothing here could be trusted
        raise _Refused
    return flat, parents


def iso_ns(text: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(proven, nanoseconds) of canonical UTC ISO texts, as ``schemas.eventtime`` parses them: the
    ingest encoder's reader (``schemas.column_checks.iso_utc_to_ns``); a row it does not prove gets
    its exact reason per record."""
    ns, proven = iso_utc_to_ns(text)
    return proven, ns


# ---------------------------------------------------------------- the checks

def decode_batch(group: FeatureGroup, keys: Sequence[bytes | None], values: Sequence[Any],
                 headers: Sequence[Any]) -> BatchColumns:
    """Decode one group's messages into columns and prove which rows are valid (module docstring)."""
    plan = compile_batch(group)
    n = len(values)
    if not len(keys) == len(headers) == n:
        raise ValueError(f"feature group {group.name!r}: {len(keys)} keys, {n} values and {len(headers)} "
                         "header lists: one of each per message")
    slow = np.zeros(n, dtype=bool)
    versions, api = _headers(headers, slow)
    lines = _plain_values(values, slow)
    try:
        env = _parse(plan, lines, slow)
        return _check(plan, env, keys, slow, versions, api)
    except _Refused:
        return _none_fast(plan, n, versions, api)


def _none_fast(plan: _Compiled, n: int, versions: np.ndarray, api: np.ndarray) -> BatchColumns:
    nulls = pa.nulls(n, plan.envelope)
    zeros = np.zeros(n, dtype=bool)
    return BatchColumns(plan.group, zeros, zeros, pa.nulls(n, pa.string()), np.zeros(n, dtype=np.int64),
                        nulls.field("record"), pa.nulls(n, pa.int64()), pa.nulls(n, pa.string()), zeros, zeros,
                        versions, api)


def _check(plan: _Compiled, env: pa.StructArray, keys: Sequence[bytes | None], slow: np.ndarray,
           versions: np.ndarray, api: np.ndarray) -> BatchColumns:
    group = plan.group
    n = len(env)
    # flatten() folds a row's nullness into its fields (.field() would not).
    op, ids, et_ns, record, stores, ttl, del_et, mode = env.flatten()
    ok = ~slow & (versions <= group.version)

    # -- the envelope, as schemas.wire.decode reads it
    is_put = _np_bool(pc.equal(op, "put"))
    is_delete = _np_bool(pc.equal(op, "delete"))
    ok &= is_put | is_delete
    ok &= _np_bool(pc.greater(pc.binary_length(ids), 0))
    ns = _np_int(et_ns)
    ok &= _np_bool(pc.is_valid(et_ns)) & (ns >= 0)
    ok &= _keys_match(keys, ids, n)
    online, offline = _stores(stores, n)
    ok &= ~_np_bool(pc.is_valid(stores)) | _stores_valid(stores, n)
    ttl_v = _np_int(ttl)
    ttl_null = ~_np_bool(pc.is_valid(ttl))
    # put: a record; ttl null or 1..MAX (decode says > 0, validate says <= MAX)
    ok &= ~is_put | (_np_bool(pc.is_valid(record)) & (ttl_null | ((ttl_v > 0) & (ttl_v <= MAX_TTL_SECONDS))))
    # delete: mode given (null and absent look alike: absent is valid, null is not), no record
    # (orjson would parse one, NaN included, and ignore it)
    mode_ok = _np_bool(pc.is_in(mode, pa.array([SOFT_DELETE, HARD_DELETE])))
    ok &= ~is_delete | (mode_ok & ~_np_bool(pc.is_valid(record)))

    # -- the group, as check_against_group / RecordValidator read it
    ok &= ~is_put | _put_checks(plan, record, ids, ns, online, offline, n)
    ok &= ~is_delete | _delete_checks(plan, ids, del_et, ns, n)

    return BatchColumns(group, ok, is_delete, ids, np.where(ok, ns, 0), record, ttl, mode, online, offline,
                        versions, api)


def _stores(stores: pa.ListArray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(online, offline) per row; absent target_stores means both."""
    given = _np_bool(pc.is_valid(stores))
    flat, parents = _list_parts(stores)
    on = _rows_of(parents, _np_bool(pc.equal(flat, ONLINE)), n)
    off = _rows_of(parents, _np_bool(pc.equal(flat, OFFLINE)), n)
    return on | ~given, off | ~given


def _stores_valid(stores: pa.ListArray, n: int) -> np.ndarray:
    flat, parents = _list_parts(stores)
    bad = ~_np_bool(pc.is_in(flat, pa.array([ONLINE, OFFLINE])))
    return ~_rows_of(parents, bad, n) & (_np_int(pc.list_value_length(stores)) > 0)


def _keys_match(keys: Sequence[bytes | None], ids: pa.Array, n: int) -> np.ndarray:
    """The key is absent or the id's UTF-8 bytes (decode's rule); a key of another type: not proven."""
    try:
        key_arr = pa.array(keys, pa.binary())
    except (pa.ArrowException, TypeError):
        return np.zeros(n, dtype=bool)
    if key_arr.null_count == n:
        return np.ones(n, dtype=bool)
    same = _np_bool(pc.equal(key_arr, pc.cast(ids, pa.binary())))
    return same | ~_np_bool(pc.is_valid(key_arr))


def _put_checks(plan: _Compiled, record: pa.StructArray, ids: pa.Array, ns: np.ndarray,
                online: np.ndarray, offline: np.ndarray, n: int) -> np.ndarray:
    rtype = record.type
    children = dict(zip([rtype.field(i).name for i in range(rtype.num_fields)], record.flatten(), strict=True))
    ok = np.ones(n, dtype=bool)
    # target stores must be enabled (decode resolves an absent list to both, validate checks it)
    if ONLINE not in plan.enabled:
        ok &= ~online
    if OFFLINE not in plan.enabled:
        ok &= ~offline
    # the record identifier, equal to the message id
    rid = children[plan.rid.name]
    if plan.rid.type is ScalarType.INTEGRAL:
        ok &= _np_bool(pc.equal(pc.cast(rid, pa.string()), ids))
        size = np.full(n, FLOAT_TEXT_MAX, dtype=np.int64)  # >= len(str(int))
    else:
        rid_bytes = _np_int(pc.binary_length(rid))
        ok &= _np_bool(pc.equal(rid, ids)) & (rid_bytes > 0) & (rid_bytes <= MAX_RECORD_ID_BYTES)
        size = rid_bytes.copy()  # >= len(rid) in characters
    size += FLOAT_TEXT_MAX
    # the event time, equal to event_time_ns
    et = children[plan.et.name]
    if plan.et.type is ScalarType.STRING:
        proven, et_ns = iso_ns(et)
        size += _np_int(pc.binary_length(et))
    else:
        d = np.asarray(pc.fill_null(et, np.nan).to_numpy(zero_copy_only=False), dtype=np.float64)
        with np.errstate(invalid="ignore"):
            proven = np.isfinite(d) & (d >= 0) & (d <= _MAX_SECONDS) & (np.floor(d) == d)
        et_ns = np.where(proven, d, 0).astype(np.int64) * 1_000_000_000
    ok &= proven & (et_ns == ns)
    for fd in plan.plain:
        good, est = _feature_checks(fd, children[fd.name], n)
        ok &= good
        size += est
    return ok & (size <= MAX_RECORD_BYTES)


def _feature_checks(fd: FeatureDefinition, col: pa.Array, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(valid, size upper bound) of one feature's values; nulls are valid and size 0."""
    present = _np_bool(pc.is_valid(col))
    if fd.collection is None:
        if fd.type is ScalarType.STRING:
            nbytes = _np_int(pc.binary_length(col))
            return nbytes <= MAX_VALUE_BYTES, nbytes
        est = np.where(present, FLOAT_TEXT_MAX, 0)
        if fd.type is ScalarType.FRACTIONAL:
            return (~present | _np_bool(pc.is_finite(col))) & ~_negative_zero(col), est
        return np.ones(n, dtype=bool), est  # int64 by the reader: in range
    flat, parents = _list_parts(col)
    lengths = _np_int(pc.list_value_length(col))
    bad = ~_np_bool(pc.is_valid(flat))  # elements cannot be null
    if fd.type is ScalarType.FRACTIONAL:
        bad |= ~_np_bool(pc.is_finite(flat), null=True) | _negative_zero(flat)
    ok = ~_rows_of(parents, bad, n)
    if fd.type is ScalarType.STRING:
        weights = _np_int(pc.binary_length(flat)).astype(np.float64)
        est = np.bincount(parents, weights=weights, minlength=n).astype(np.int64)
    else:
        est = lengths * FLOAT_TEXT_MAX  # the validator's estimate (20 or 24 a number) at most
    ok &= est <= MAX_VALUE_BYTES
    if fd.collection is CollectionType.VECTOR:
        ok &= ~present | (lengths == fd.dimension)
    elif fd.collection is CollectionType.SET and len(flat):
        ok &= ~_duplicates(flat, parents, fd.type, n)
    return ok, est


def _negative_zero(col: pa.Array) -> np.ndarray:
    """-0.0: the JSON integer ``-0`` is int 0 to orjson (so +0.0 once coerced), but -0.0 to Arrow.
    The text ``-0.0`` is -0.0 to both; they cannot be told apart here, so neither is proven."""
    d = np.asarray(pc.fill_null(col, 1.0).to_numpy(zero_copy_only=False), dtype=np.float64)
    return (d == 0.0) & np.signbit(d)


def _duplicates(flat: pa.Array, parents: np.ndarray, scalar: ScalarType, n: int) -> np.ndarray:
    """Rows of a Set holding one value twice (Python equality: -0.0 == 0.0, so normalized)."""
    if scalar is ScalarType.FRACTIONAL:
        flat = pc.add(flat, 0.0)  # -0.0 + 0.0 == +0.0
    t = pa.table({"p": pa.array(parents), "v": flat})
    counts = t.group_by(["p", "v"]).aggregate([("p", "count")])
    dup = counts.filter(pc.greater(counts["p_count"], 1))["p"]
    out = np.zeros(n, dtype=bool)
    out[np.asarray(dup.to_numpy(), dtype=np.int64)] = True
    return out


def _delete_checks(plan: _Compiled, ids: pa.Array, del_et: pa.Array, ns: np.ndarray, n: int) -> np.ndarray:
    if plan.rid.type is ScalarType.INTEGRAL:
        ok = _np_bool(pc.match_substring_regex(ids, _CANONICAL_INT_RE))
    else:
        ok = _np_int(pc.binary_length(ids)) <= MAX_RECORD_ID_BYTES
    proven, et_ns = iso_ns(del_et)
    return ok & proven & (et_ns == ns)
