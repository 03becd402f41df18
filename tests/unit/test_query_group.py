"""Queries built from real FeatureGroup definitions: schema from schemas.ddl, the table from the catalog."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pytest

from schemas.ddl import offline_arrow_schema
from schemas.group import FeatureGroup
from schemas.types import FeatureDefinition
from sinks.offline.query import OfflineQuery, snapshot
from sinks.offline.query_errors import QueryError
from tests.support.query_fixtures import open_tables, row, table_schema, write_table

T0 = 1_633_176_000 * 1_000_000_000


def group(tmp_path, name="customers", offline=True) -> FeatureGroup:
    return FeatureGroup(
        name=name, record_identifier_name="customer_id", event_time_name="event_time",
        features=(FeatureDefinition("customer_id", "String"), FeatureDefinition("event_time", "String"),
                  FeatureDefinition("age", "Integral"), FeatureDefinition("tags", "String", "List")),
        offline_uri=str(tmp_path / f"{name}-1") if offline else None)


def test_fixture_schema_is_the_real_offline_schema(tmp_path):
    # The hand-built tables of the other tests must look like what the writer writes.
    assert offline_arrow_schema(group(tmp_path)) == table_schema(
        "customer_id", "event_time", {"age": pa.int64(), "tags": pa.list_(pa.string())})


def test_query_a_group_through_the_catalog(tmp_path):
    g = group(tmp_path)
    tables = open_tables(tmp_path)
    write_table(tables, "customers", offline_arrow_schema(g),
                [row("a", T0, 0, age=1), row("a", T0 + 10, 1, age=2), row("b", T0, 2, deleted=True)],
                location=tmp_path / "customers-1")
    with OfflineQuery([g], tables=tables) as q:
        assert q.sql('SELECT count(*) AS n FROM "customers"')["n"].to_pylist() == [3]
        ent = pd.DataFrame({"customer_id": ["a", "b"], "event_time": pd.to_datetime([T0 + 5, T0], utc=True)})
        assert q.get_historical_features(ent, ["customers:age"])["age"].to_pylist() == [1, None]
    assert snapshot(g, tables=tables)["age"].to_pylist() == [2]


def test_group_with_an_empty_table(tmp_path):
    g = group(tmp_path)
    (tmp_path / "customers-1").mkdir()
    with OfflineQuery([g], tables=open_tables(tmp_path)) as q:
        assert q.sql("SELECT * FROM customers").schema == offline_arrow_schema(g)


def test_group_without_offline_store(tmp_path):
    with pytest.raises(QueryError, match="'customers' has no offline store"):
        OfflineQuery([group(tmp_path, offline=False)], tables=open_tables(tmp_path))
