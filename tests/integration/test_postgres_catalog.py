"""The offline tables in a shared catalog: pyiceberg's SQL catalog in a real PostgreSQL server
(started by the fixture), as sinks on several hosts use it."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import pytest

from featurestream.sdk import FeatureStore
from sinks.offline.catalog import OfflineTables
from sinks.offline.errors import OffsetsMismatchError
from sinks.offline.table_commit import recorded_offsets
from sinks.offline.writer import OfflineWriter
from tests.integration.helpers import customer, customers_group, read_topic
from tests.integration.procs import Proc
from tests.support.offline import TOPIC, make_group, put, table_coordinates
from tests.support.postgres import running_postgres
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def postgres_uri():
    with running_postgres() as url:
        yield url


def test_two_writers_on_one_postgres_catalog_one_commit_wins(postgres_uri, stack):
    tables_a = OfflineTables.open(postgres_uri, "pgwriters", stack.storage_options())
    tables_b = OfflineTables.open(postgres_uri, "pgwriters", stack.storage_options())  # "another host"
    g = make_group("pg-customers", offline_uri=f"{stack.offline_uri}/pgwriters/pg-customers-1")
    a, b = OfflineWriter(tables_a), OfflineWriter(tables_b)
    assert a.resume(g, TOPIC, 0) is None and b.resume(g, TOPIC, 0) is None
    for o in range(20):
        a.add(g, put(o), TOPIC, 0, o)
        b.add(g, put(o), TOPIC, 0, o)
    assert a.flush(TOPIC, 0).next_offset == 20
    with pytest.raises(OffsetsMismatchError, match="table records 20"):
        b.flush(TOPIC, 0)
    assert recorded_offsets(tables_b.existing(g)) == {(TOPIC, 0): 20}
    assert table_coordinates(tables_b, g) == Counter((TOPIC, 0, o) for o in range(20))


def test_sink_and_queries_through_a_postgres_catalog(postgres_uri, stack, tmp_path, unique_name):
    config = replace(stack, catalog_uri=postgres_uri)
    with FeatureStore(config) as store:
        g = store.create_feature_group(customers_group(unique_name("pg"), partitions=2))
        store.ingest(g.name, [customer(i, second=i) for i in range(500)], progress=False)
        topic = store.registry.topic_of(g.name)
        sink = Proc(config, ["sink", "--metrics-port", "0", "--max-age-s", "0.5", "--compact-every-s", "0"],
                    tmp_path / "sink.log")
        try:
            expected = Counter((topic, m.partition(), m.offset()) for m in read_topic(config, topic))
            tables = store.offline_tables()
            wait_for(lambda: table_coordinates(tables, g) == expected, timeout_s=90, interval_s=0.5,
                     what=f"every row once in the Postgres-catalogued table\n{sink.tail()}")
        finally:
            sink.stop()
        assert store.query(f'SELECT count(*) AS n FROM "{g.name}"')["n"].to_pylist() == [500]
        assert "jdbc:postgresql://127.0.0.1:" in store.ddl(g.name) and "<password>" not in store.ddl(g.name)
