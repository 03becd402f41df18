"""SQL over a hand-built offline table: the SPEC's queries (as documented), snapshots, time travel."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pytest

from schemas.errors import FeatureStoreError, ValidationError
from schemas.ordering import latest_order_sql
from sinks.offline.query import OfflineQuery, latest_rows_sql, query, snapshot
from sinks.offline.query_errors import QueryError, UnknownGroupError, UnknownTableError
from sinks.offline.query_source import OfflineSource
from tests.support.query_fixtures import make_source, open_tables, row, table_schema, write_table

S = 1_000_000_000
T0 = 1_633_176_000 * S  # 2021-10-02T12:00:00Z
H = 3600 * S
README = Path(__file__).resolve().parents[2] / "sinks" / "offline" / "README.md"

SCHEMA = table_schema("customer_id", "event_time", {"age": pa.int64(), "tags": pa.list_(pa.string())})

ROWS = [
    row("c1", T0, 0, age=10), row("c1", T0 + H, 1, age=11),
    # equal event time: the later write (Kafka offset) wins, whatever api_invocation_time says
    # (a producer's clock decides that one; schemas/ordering.py)
    row("c2", T0, 2, ait_ns=T0 + 5 * S, age=20), row("c2", T0, 3, ait_ns=T0 + 1 * S, age=21),
    # equal event time: the later write wins, whatever write_time says (a replayed file)
    row("c3", T0, 4, wt_ns=T0 + 9 * S, age=30), row("c3", T0, 5, wt_ns=T0 + 2 * S, age=31),
    # everything equal: the later Kafka offset decides
    row("c4", T0, 6, age=40), row("c4", T0, 7, age=41),
    # put, then deleted two hours later
    row("c5", T0, 8, age=50, tags=["a", "b"]), row("c5", T0 + 2 * H, 9, deleted=True),
    # only exists after the time-travel point
    row("c6", T0 + 3 * H, 10, age=60),
    # nanoseconds matter: the later event time wins although it was written first
    row("c7", T0 + 1000, 11, age=71), row("c7", T0 + 500, 12, age=70),
]
LATEST = {"c1": 11, "c2": 21, "c3": 31, "c4": 41, "c5": None, "c6": 60, "c7": 71}
AS_OF_T0 = {"c1": 10, "c2": 21, "c3": 31, "c4": 41, "c5": 50}  # as of 12:00:00 exactly


@pytest.fixture()
def q(tmp_path):
    src = make_source(tmp_path, "customers", SCHEMA, ROWS, files_per_partition=2)
    with OfflineQuery({"customers": src}) as q:
        yield q


def readme_blocks() -> dict[str, str]:
    text = README.read_text()
    blocks = re.findall(r"```sql\n(.*?)```", text, flags=re.S)
    return {b.splitlines()[0].removeprefix("-- ").strip(): b for b in blocks}


def ages(table: pa.Table) -> dict[str, int | None]:
    return dict(zip(table["customer_id"].to_pylist(), table["age"].to_pylist(), strict=True))


def test_readme_all_rows(q):
    t = q.sql(readme_blocks()["all rows"])
    assert t.num_rows == len(ROWS)
    assert t["customer_id"].to_pylist() == sorted(r["__id"] for r in ROWS)
    assert t.schema.field("event_time").type == pa.timestamp("ns", "UTC")
    assert t.schema.field("tags").type == pa.list_(pa.string())


def test_readme_latest_row_per_identifier(q):
    blocks = readme_blocks()
    latest = q.sql(blocks["latest row per identifier (ties on event time: the later write, by Kafka position; see"])
    assert ages(latest) == LATEST
    assert latest.filter(pa.compute.equal(latest["customer_id"], "c5"))["is_deleted"].to_pylist() == [True]


def test_readme_latest_queries_order_by_the_one_rule():
    latest = [b for title, b in readme_blocks().items() if title.startswith(("latest", "the same"))]
    assert len(latest) == 3
    for block in latest:
        assert f"ORDER BY {latest_order_sql('event_time')})" in block


def test_readme_latest_without_deleted(q):
    got = ages(q.sql(readme_blocks()["latest row per identifier, without deleted records"]))
    assert got == {k: v for k, v in LATEST.items() if k != "c5"}


def test_readme_time_travel(q):
    got = ages(q.sql(readme_blocks()["the same, as of a past event time (time travel)"]))
    # c7's rows are 500 ns / 1 us after 12:00:00, so a microsecond TIMESTAMP literal excludes them
    assert got == AS_OF_T0


def test_event_time_is_a_timestamp_in_sql(q):
    t = q.sql("SELECT customer_id, age FROM customers WHERE customer_id = 'c7' ORDER BY event_time")
    assert t["age"].to_pylist() == [70, 71]  # ns order, not write order
    n = q.sql("SELECT count(*) AS n FROM customers WHERE event_time > TIMESTAMP '2021-10-02 12:00:00.000000'")
    assert n["n"].to_pylist() == [1 + 1 + 1 + 2]  # c1@+1h, c5 delete, c6, c7 x2
    n = q.sql("SELECT count(*) AS n FROM customers WHERE event_time >= TIMESTAMP '2021-10-02 12:00:00.000001'")
    assert n["n"].to_pylist() == [4]  # c7@+1000ns counts, c7@+500ns does not
    w = q.sql("SELECT customer_id, lag(age) OVER (PARTITION BY customer_id ORDER BY event_time) AS prev "
              "FROM customers WHERE customer_id = 'c1' ORDER BY event_time")
    assert w["prev"].to_pylist() == [None, 10]


def test_params_and_pandas(q):
    df = q.to_pandas("SELECT age FROM customers WHERE customer_id = ? ORDER BY event_time", [ "c1"])
    assert df["age"].tolist() == [10, 11]


def test_snapshot_latest_and_deleted(q):
    assert ages(q.snapshot("customers")) == {k: v for k, v in LATEST.items() if k != "c5"}
    with_deleted = q.snapshot("customers", include_deleted=True)
    assert ages(with_deleted) == LATEST
    assert with_deleted.schema == SCHEMA


@pytest.mark.parametrize("as_of", ["2021-10-02T12:00:00Z", T0 / S, datetime(2021, 10, 2, 12, tzinfo=UTC)])
def test_snapshot_as_of_forms(q, as_of):
    assert ages(q.snapshot("customers", as_of=as_of)) == AS_OF_T0


def test_snapshot_time_travel_nanoseconds_and_deletes(q):
    assert ages(q.snapshot("customers", as_of="2021-10-02T12:00:00.0000005Z")) == {**AS_OF_T0, "c7": 70}
    assert ages(q.snapshot("customers", as_of="2021-10-02T13:00:00Z"))["c1"] == 11
    later = q.snapshot("customers", as_of="2021-10-02T14:00:00Z")
    assert "c5" not in ages(later)  # the delete is at 14:00 exactly: included
    assert ages(q.snapshot("customers", as_of="2021-10-02T13:59:59.999999999Z"))["c5"] == 50
    assert q.snapshot("customers", as_of="2000-01-01T00:00:00Z").num_rows == 0


def test_latest_rows_sql_quotes_names():
    sql = latest_rows_sql('my-"group', "id-x", "t", as_of="2021-10-02T12:00:00Z")
    assert '"my-""group"' in sql and '"id-x"' in sql and "TIMESTAMPTZ_NS" in sql


def test_group_names_with_dash_and_one_shot_helpers(tmp_path):
    src = make_source(tmp_path, "web-clicks", SCHEMA, ROWS[:2])
    assert query('SELECT count(*) AS n FROM "web-clicks"', {"web-clicks": src})["n"].to_pylist() == [2]
    assert snapshot(src)["age"].to_pylist() == [11]


def test_features_missing_from_older_files_read_as_null(tmp_path):
    tables = open_tables(tmp_path)
    old_schema = pa.schema([f for f in SCHEMA if f.name != "tags"])
    write_table(tables, "customers", old_schema, ROWS[:2], location=tmp_path / "customers")
    table = write_table(tables, "customers", SCHEMA, ROWS[8:9], location=tmp_path / "customers")  # tags added
    src = OfflineSource("customers", "customer_id", "event_time", SCHEMA, table,
                        table.current_snapshot().snapshot_id)
    with OfflineQuery([src]) as q:
        t = q.sql("SELECT customer_id, tags FROM customers ORDER BY _kafka_offset")
    assert t["tags"].to_pylist() == [None, None, ["a", "b"]]
    assert t.schema.field("tags").type == pa.list_(pa.string())


def test_group_without_files_is_empty_with_its_schema():
    src = OfflineSource("fresh", "customer_id", "event_time", SCHEMA)
    with OfflineQuery([src]) as q:
        assert q.sql("SELECT * FROM fresh").schema == SCHEMA
        assert q.sql("SELECT * FROM fresh").num_rows == 0
        assert q.snapshot("fresh", as_of="2021-10-02T12:00:00Z").schema == SCHEMA


def test_event_time_bounds_are_pushed_into_the_scan(tmp_path):
    day = 24 * H
    rows = [row("a", T0 + d * day, d, age=d) for d in range(4)]  # four day partitions
    src = make_source(tmp_path, "customers", SCHEMA, rows)
    assert len(src.files()) == 4
    assert len(src.files(upper_ns=T0 + day - 1)) == 1
    assert len(src.files(upper_ns=T0 + day)) == 2
    assert len(src.files(lower_ns=T0 + 3 * day, upper_ns=T0 + 3 * day)) == 1
    assert src.rows(upper_ns=T0 + day)["age"].to_pylist() == [0, 1]
    assert src.rows(lower_ns=T0 + 1, upper_ns=T0 + 2 * day)["age"].to_pylist() == [1, 2]


# ---------------------------------------------------------------- bad input

def test_unknown_table_names_it_and_lists_groups(q):
    with pytest.raises(UnknownTableError) as info:
        q.sql('SELECT * FROM "orders"')
    assert "'orders'" in str(info.value) and "'customers'" in str(info.value)
    assert isinstance(info.value, FeatureStoreError)


@pytest.mark.parametrize("sql", ["SELEC * FROM customers", "SELECT nope FROM customers",
                                 "SELECT age + 'x' FROM customers", "SELECT * FROM customers WHERE event_time < 'garbage'"])
def test_sql_errors_are_query_errors(q, sql):
    with pytest.raises(QueryError) as info:
        q.sql(sql)
    assert "customers" in str(info.value) or "nope" in str(info.value) or "garbage" in str(info.value) \
        or "syntax" in str(info.value).lower()
    assert info.value.sql == sql


@pytest.mark.parametrize("sql", ["", "   ", None, 42, b"SELECT 1"])
def test_sql_that_is_not_sql_text(q, sql):
    with pytest.raises(QueryError, match="non-empty SQL string"):
        q.sql(sql)


def test_snapshot_unknown_group_lists_known(q):
    with pytest.raises(UnknownGroupError, match="'orders'.*'customers'"):
        q.snapshot("orders")


@pytest.mark.parametrize("as_of", ["yesterday", "2021-13-45T00:00:00Z", datetime(2021, 10, 2), float("nan"),
                                   True, [1], "2021-10-02T12:00:00"])
def test_snapshot_bad_as_of(q, as_of):
    with pytest.raises(ValidationError, match="customers.*as_of"):
        q.snapshot("customers", as_of=as_of)


def _one_data_file(tmp_path):
    files = sorted((tmp_path / "gone").rglob("*.parquet"))
    assert len(files) == 1
    return files[0]


def test_missing_file_is_a_clear_error(tmp_path):
    src = make_source(tmp_path, "gone", SCHEMA, ROWS[:2])
    _one_data_file(tmp_path).unlink()
    with pytest.raises(QueryError, match="'gone'.*parquet"), OfflineQuery([src]) as q:
        q.sql("SELECT * FROM gone")


def test_garbage_file_is_a_clear_error(tmp_path):
    src = make_source(tmp_path, "gone", SCHEMA, ROWS[:2])
    _one_data_file(tmp_path).write_bytes(b"\x00garbage, not parquet" * 10)
    with pytest.raises(QueryError, match="'gone'"), OfflineQuery([src]) as q:
        q.sql("SELECT * FROM gone")
