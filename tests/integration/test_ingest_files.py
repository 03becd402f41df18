"""`featurestream ingest FILE` against the real broker: bad rows are rejected with their line and
the rest is published; --strict publishes nothing; the rejects file names each row's line."""

from __future__ import annotations

import subprocess
import sys

import orjson
import pytest

from tests.integration.helpers import customer, customers_group, read_topic
from tests.integration.procs import stack_env

pytestmark = pytest.mark.integration


def _ingest(stack, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "featurestream.cli", "ingest", *args, "--no-progress"],
                          env=stack_env(stack), capture_output=True, text=True, timeout=180)


def _jsonl(rows: list) -> bytes:
    return b"".join((r if isinstance(r, bytes) else orjson.dumps(r)) + b"\n" for r in rows)


def test_jsonl_with_bad_lines_publishes_the_rest_exactly_and_strict_publishes_nothing(store, stack, tmp_path,
                                                                                       unique_name):
    g = store.create_feature_group(customers_group(unique_name("files")))
    topic = store.registry.topic_of(g.name)
    rows: list = [{**customer(i), "balance": 5.81, "visits": 9007199254740993} for i in range(100)]
    rows[10] = orjson.dumps(customer(10))[:-1] + b', "age": 9223372036854775808}'   # beyond int64
    rows[20] = b'{"customer_id": "c20", "score": NaN}'                              # NaN literal
    rows[30] = b'{"customer_id": "c30", '                                            # malformed
    path = tmp_path / "rows.jsonl"
    path.write_bytes(_jsonl(rows))

    strict = _ingest(stack, g.name, str(path), "--strict")
    assert strict.returncode == 1, strict.stderr
    assert "nothing was published" in strict.stderr and read_topic(stack, topic) == []

    rejects = tmp_path / "rejects.jsonl"
    res = _ingest(stack, g.name, str(path), "--rejects", str(rejects))
    assert res.returncode == 1, res.stderr
    assert "97 published, 3 rejected" in res.stderr
    assert "line 11:" in res.stderr and "'age'" in res.stderr and "signed 64-bit" in res.stderr
    got = [orjson.loads(line) for line in rejects.read_text().splitlines()]
    assert [(r["line"], r["index"]) for r in got] == [(11, 10), (21, 20), (31, 30)]
    assert "NaN" in got[1]["reason"] and "not valid JSON" in got[2]["reason"]
    assert got[2]["row"] is None and got[2]["text"].startswith('{"customer_id": "c30"')
    published = [orjson.loads(m.value())["record"] for m in read_topic(stack, topic)]
    assert len(published) == 97
    assert all(repr(r["balance"]) == "5.81" and r["visits"] == 9007199254740993 for r in published)


def test_csv_header_naming_an_unknown_feature_refuses_the_file_before_publishing(store, stack, tmp_path,
                                                                                 unique_name):
    g = store.create_feature_group(customers_group(unique_name("files")))
    path = tmp_path / "rows.csv"
    path.write_text("customer_id,event_time,agee\nc1,2031-01-01T00:00:00Z,4\n")
    res = _ingest(stack, g.name, str(path))
    assert res.returncode == 1 and "'agee', not a feature of group" in res.stderr, res.stderr
    assert read_topic(stack, store.registry.topic_of(g.name)) == []
    ok = tmp_path / "ok.csv"
    ok.write_bytes(b"\xef\xbb\xbfcustomer_id,event_time,age\r\nc1,2031-01-01T00:00:00Z,\r\n"
                   b"c2,2031-01-01T00:00:00Z,9223372036854775807\r\n")
    res = _ingest(stack, g.name, str(ok), "--strict")
    assert res.returncode == 0, res.stderr
    ages = sorted((r["customer_id"], r["age"]) for r in
                  (orjson.loads(m.value())["record"] for m in read_topic(stack, store.registry.topic_of(g.name))))
    assert ages == [("c1", None), ("c2", 2**63 - 1)]


def test_cli_put_reads_the_record_with_the_groups_types(store, stack, unique_name):
    g = store.create_feature_group(customers_group(unique_name("put")))
    record = orjson.dumps(customer(1))[:-1] + b', "visits": 9007199254740993.0, "balance": 5.81}'
    res = subprocess.run([sys.executable, "-m", "featurestream.cli", "put", g.name, record.decode()],
                         env=stack_env(stack), capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    (msg,) = read_topic(stack, store.registry.topic_of(g.name))
    assert b'"visits":9007199254740993,' in msg.value() and b'"balance":5.81,' in msg.value()
