"""The pure parts the benchmarks rely on: ingest's shared-header encoding, row parts, percentiles."""

from __future__ import annotations

import math

import pandas as pd
import pyarrow as pa
import pytest

from bench._common import customer, customers_group, percentile
from bench.online import _METRIC
from schemas.validate import compile_validator
from schemas.wire import decode, encode
from streams.ingest import encode_chunk
from streams.rowsource import iter_chunks, iter_parts, part_to_chunk

API_NS = 1_700_000_000_000_000_000


def test_encode_chunk_is_byte_for_byte_what_wire_encode_gives() -> None:
    # ingest builds the headers once per chunk; the bytes must still equal a per-record encode.
    group = customers_group("g")
    validator = compile_validator(group)
    rows = [customer(i, second=i) for i in range(50)]
    (chunk,) = iter_chunks(rows, chunk_size=100)
    encoded, rejects = encode_chunk(validator, chunk, api_invocation_time_ns=API_NS)
    assert rejects == []
    expected = [encode(validator.validate(r, api_invocation_time_ns=API_NS)) for r in rows]
    assert encoded == expected
    assert decode(*encoded[7]).api_invocation_time_ns == API_NS


def test_a_chunk_with_only_bad_rows_has_no_headers_and_reports_each() -> None:
    validator = compile_validator(customers_group("g"))
    bad = [{**customer(1), "score": math.nan}, {**customer(2), "age": "old"}, "garbage", {"bogus": 1}]
    (chunk,) = iter_chunks(bad)
    encoded, rejects = encode_chunk(validator, chunk)
    assert encoded == []
    assert [r.index for r in rejects] == [0, 1, 2, 3]
    assert rejects[0].feature == "score" and rejects[1].feature == "age"


@pytest.mark.parametrize("make", [lambda rows: rows, pd.DataFrame, pa.Table.from_pylist],
                         ids=["dicts", "pandas", "arrow"])
def test_parts_converted_later_equal_direct_chunks(make) -> None:
    rows = [customer(i) for i in range(23)]
    data = make(rows)
    via_parts = [part_to_chunk(start, part) for start, part in iter_parts(data, 5)]
    direct = list(iter_chunks(data, 5))
    assert [c[0] for c in via_parts] == [0, 5, 10, 15, 20]
    assert via_parts == direct


def test_frame_missing_values_become_none_only_where_missing() -> None:
    frame = pd.DataFrame([customer(1), {**customer(2), "score": None, "city": None, "tags": None}])
    (chunk,) = iter_chunks(frame)
    first, second = (dict(zip(chunk[1], row, strict=True)) for row in chunk[2])
    assert first["score"] == 1 / 7 and first["city"] == "Lyon"
    assert second["score"] is None and second["city"] is None and second["tags"] is None
    assert second["visits"] == 2


def test_iter_parts_refuses_what_ingest_cannot_take() -> None:
    with pytest.raises(TypeError, match="put_record"):
        list(iter_parts(customer(1)))
    with pytest.raises(TypeError, match="DataFrame"):
        list(iter_parts(b"bytes"))


def test_percentile_nearest_rank() -> None:
    values = sorted(float(i) for i in range(1, 101))
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile([3.0], 99) == 3.0
    assert math.isnan(percentile([], 50))


def test_processor_metric_lines_parse_and_foreign_lines_do_not() -> None:
    text = ('featurestream_online_records_total{group="customers",status="applied"} 1500.0\n'
            'featurestream_online_records_total{group="other",status="stale"} 3.0\n'
            'featurestream_online_records_created{group="customers",status="applied"} 1.7e9\n')
    assert _METRIC.findall(text) == [("customers", "applied", "1500.0"), ("other", "stale", "3.0")]


def test_wrk_requests_are_written_into_lua_byte_for_byte() -> None:
    # A long bracket [[...]] would turn each CR LF of the raw request into LF: every byte outside
    # printable ASCII, the quote and the backslash is written as a decimal escape instead.
    from bench.wrk_load import lua_string, raw_request

    raw = raw_request("PUT", "/FeatureGroup/g", "", {"Host": "h", "X-Amz-Date": "20261203T000000Z"},
                      '{"v":"é\\\\"}'.encode())
    text = lua_string(raw)
    assert text[0] == text[-1] == '"' and "\r" not in text and "\n" not in text
    body = text[1:-1]
    assert all(32 <= ord(c) < 127 for c in body)
    decoded = bytearray()
    i = 0
    while i < len(body):  # Lua's reading of the escapes, by hand
        if body[i] == "\\":
            decoded.append(int(body[i + 1:i + 4]))
            i += 4
        else:
            decoded.append(ord(body[i]))
            i += 1
    assert bytes(decoded) == raw
    assert raw.startswith(b"PUT /FeatureGroup/g HTTP/1.1\r\nHost: h\r\n") and raw.endswith(b"\r\n\r\n" + '{"v":"é\\\\"}'.encode())
