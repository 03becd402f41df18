"""Spark reads featurestream's Iceberg tables through the same catalog, consistently.

Spark 4.1 (pyspark, the `test` extra) with Iceberg's Spark runtime, its AWS bundle and the JDBC
drivers (``deploy/spark/pom.xml``, fetched by ``make setup``) reads the catalog the sink
commits to, with the settings ``featurestream ddl`` prints (``engine_ddl.spark_catalog_conf``).
While the real sink writes a stream of published records and compacts the table every
second, each Spark read pins an Iceberg snapshot and must return exactly the rows
``featurestream``'s query path returns at that same snapshot (time travel by commit resolves
it), with no duplicate (Kafka partition, offset). At the end Spark holds every published offset
once, with the same typed values.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from dataclasses import replace

import pyarrow as pa
import pytest

from featurestream.sdk import FeatureStore
from schemas.eventtime import format_iso
from sinks.offline.catalog import CATALOG_NAME
from sinks.offline.engine_ddl import spark_catalog_conf
from sinks.offline.table_commit import OFFSETS_PROPERTY, recorded_offsets
from tests.integration.helpers import customers_group, read_topic
from tests.integration.procs import Proc
from tests.support.postgres import running_postgres
from tests.support.values import FLOAT_EDGES, INT_EDGES, STRING_EDGES
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration

# Commits every ~2 s per partition and a compaction pass every second: the table moves under the
# reads, and compaction (which must win a commit race against the sink) gets its turns.
SINK_FLAGS = ("sink", "--metrics-port", "0", "--max-age-s", "2", "--compact-every-s", "1",
              "--target-file-mb", "0.5")


def _record(i: int) -> dict:
    """Record ``i``: edge values of every type, an event time with nanoseconds over two days."""
    return {
        "customer_id": f"c{i % 97}",
        "event_time": f"2031-01-0{1 + i % 2}T{i % 24:02d}:{i % 60:02d}:{(i * 7) % 60:02d}.{(i * 7919) % 10**9:09d}Z",
        "age": INT_EDGES[i % len(INT_EDGES)], "score": FLOAT_EDGES[i % len(FLOAT_EDGES)],
        "city": STRING_EDGES[i % len(STRING_EDGES)], "visits": i, "balance": i / 3,
        "segment": "gold" if i % 2 else "silver", "tags": ["a", STRING_EDGES[(i + 3) % len(STRING_EDGES)]],
        "embedding": [0.1, -0.0, FLOAT_EDGES[(i + 1) % len(FLOAT_EDGES)], float(i)],
    }


def _exact(value):
    """A comparable form: floats by their exact hex (-0.0 differs from 0.0), lists element-wise."""
    if isinstance(value, float):
        return ("float", value.hex())
    if isinstance(value, list):
        return tuple(_exact(v) for v in value)
    return value


def _as_ints(t: pa.Table) -> pa.Table:
    """Timestamp columns as int64 (their unit's count since the epoch), for exact comparison."""
    cols = [c.cast(pa.int64()) if pa.types.is_timestamp(c.type) else c for c in t.columns]
    return pa.Table.from_arrays(cols, names=t.column_names)


def _keyed(t: pa.Table) -> tuple[dict, list]:
    """(partition, offset) → row (column → exact value), and the keys seen more than once."""
    rows = _as_ints(t).to_pylist()
    keys = Counter((r["_kafka_partition"], r["_kafka_offset"]) for r in rows)
    return ({(r["_kafka_partition"], r["_kafka_offset"]): {k: _exact(v) for k, v in r.items()} for r in rows},
            [k for k, n in keys.items() if n > 1])


def _spark_rows_as_view(spark_rows: dict, event_time: str) -> dict:
    """Spark's rows in featurestream's view shape: the event time is the exact ``_event_time_ns``
    (after checking the microsecond column is its floor), the two clocks in nanoseconds."""
    out = {}
    for key, row in spark_rows.items():
        row = dict(row)
        ns = row.pop("_event_time_ns")
        assert row[event_time] == ns // 1000, (key, row[event_time], ns)
        row[event_time] = ns
        for clock in ("api_invocation_time", "write_time"):
            row[clock] = row[clock] * 1000
        out[key] = row
    return out


def _table_name(prefix: str, group: str) -> str:
    return f"{CATALOG_NAME}.`{prefix}`.`{group}`"


def _same_snapshot_read(spark, store: FeatureStore, group, prefix: str):
    """Read the table's current commit through featurestream (time travel by commit to its
    timestamp) and through Spark (``VERSION AS OF`` the snapshot featurestream resolved);
    assert both hold the same rows, each once. Returns (snapshot id, rows)."""
    table = store.offline_tables().existing(group)
    current = table.current_snapshot()
    when = format_iso(current.timestamp_ms * 1_000_000)
    with store.offline_query([group.name], as_of_commit=when) as q:
        snapshot_id = q.sources[group.name].snapshot_id
        ours, our_dups = _keyed(q.sql(f'SELECT * FROM "{group.name}"'))
    theirs, their_dups = _keyed(spark.sql(f"SELECT * FROM {_table_name(prefix, group.name)} "
                                          f"VERSION AS OF {snapshot_id}").toArrow())
    assert not our_dups and not their_dups, (snapshot_id, our_dups[:5], their_dups[:5])
    assert theirs.keys() == ours.keys(), (snapshot_id, sorted(theirs.keys() ^ ours.keys())[:10])
    view = _spark_rows_as_view(theirs, group.event_time_name)
    differ = [k for k in ours if view[k] != ours[k]]
    assert not differ, (snapshot_id, differ[:3], [(view[k], ours[k]) for k in differ[:1]])
    return snapshot_id, ours


def _compactions(table) -> set[int]:
    """Ids of the snapshots that replaced data files (compaction rewrites)."""
    return {s.snapshot_id for s in table.metadata.snapshots
            if s.summary is not None and int(s.summary.additional_properties.get("deleted-data-files", 0)) > 0}


def _ancestors(table, snapshot_id: int) -> set[int]:
    out, snap = set(), table.snapshot_by_id(snapshot_id)
    while snap is not None:
        out.add(snap.snapshot_id)
        snap = None if snap.parent_snapshot_id is None else table.snapshot_by_id(snap.parent_snapshot_id)
    return out


# The session's Spark (conftest.py) starts and warms up within the first test that uses it.
@pytest.mark.timeout(600)
def test_spark_reads_what_featurestream_reads_while_the_sink_writes_and_compacts(spark, stack, tmp_path,
                                                                                  unique_name, request):
    with FeatureStore(stack) as store:
        g = store.create_feature_group(customers_group(unique_name("spark"), partitions=2))
        topic = store.registry.topic_of(g.name)
        sink = Proc(stack, list(SINK_FLAGS), tmp_path / "sink.log")
        request.addfinalizer(sink.stop)
        stop = threading.Event()
        published: list[int] = []
        errors: list[BaseException] = []

        def publish() -> None:
            i = 0
            try:
                while not stop.is_set():
                    published.append(store.ingest(g.name, [_record(i + k) for k in range(100)],
                                                  progress=False).published)
                    i += 100
                    stop.wait(0.5)  # pacing: ~200 records/s, a stream rather than one burst
            except BaseException as exc:  # noqa: BLE001 - reported by the test thread
                errors.append(exc)

        writer = threading.Thread(target=publish, name="publisher", daemon=True)
        writer.start()
        try:
            reads: list[tuple[int, int]] = []  # (snapshot id, rows) of each consistent read
            after_compaction = 0

            def enough_reads() -> bool:
                nonlocal after_compaction
                assert not errors, errors
                assert sink.alive(), sink.tail()
                table = store.offline_tables().existing(g)
                if table is None or table.current_snapshot() is None:
                    return False
                snapshot_id, rows = _same_snapshot_read(spark, store, g, stack.topic_prefix)
                if not reads or reads[-1][0] != snapshot_id:
                    reads.append((snapshot_id, len(rows)))
                    if _compactions(table) & _ancestors(table, snapshot_id):
                        after_compaction += 1
                return len(reads) >= 6 and after_compaction >= 3

            wait_for(enough_reads, timeout_s=150, interval_s=0.2,
                     what="six Spark reads of moving snapshots, three after a compaction")
        finally:
            stop.set()
            writer.join(60)
        assert not errors, errors
        assert [n for _, n in reads] == sorted(n for _, n in reads), "a later snapshot held fewer rows"

        expected = Counter((m.partition(), m.offset()) for m in read_topic(stack, topic))
        assert expected.total() == sum(published) > 0
        wait_for(lambda: sum(recorded_offsets(store.offline_tables().existing(g)).values()) == expected.total(),
                 timeout_s=90, interval_s=0.5, what=f"the sink to commit every published offset\n{sink.tail()}")
        sink.stop()
        snapshot_id, rows = _same_snapshot_read(spark, store, g, stack.topic_prefix)
        assert Counter(rows.keys()) == expected  # every published offset, exactly once, in Spark too
        name = _table_name(stack.topic_prefix, g.name)
        assert spark.sql(f"SELECT count(*) AS n FROM {name}").collect()[0]["n"] == expected.total()

        # The commits' Kafka offsets are visible to Spark in the snapshots metadata table.
        snaps = {r["snapshot_id"]: r for r in spark.sql(
            f"SELECT snapshot_id, operation, summary['{OFFSETS_PROPERTY}'] AS offsets FROM {name}.snapshots").collect()}
        assert snapshot_id in snaps and snaps[snapshot_id]["offsets"], snaps.get(snapshot_id)
        offsets = json.loads(snaps[snapshot_id]["offsets"])
        assert {(topic, int(p)): o for p, o in offsets[topic].items()} == recorded_offsets(
            store.offline_tables().existing(g))
        assert any(r["operation"] == "overwrite" for r in snaps.values()), "no compaction snapshot seen by Spark"
    print(f"spark interop: {len(reads)} consistent reads ({after_compaction} after a compaction), "
          f"{expected.total()} offsets")


@pytest.fixture(scope="module")
def postgres_uri():
    with running_postgres() as url:
        yield url


@pytest.mark.timeout(360)
def test_spark_reads_a_postgres_catalog(spark, stack, postgres_uri, tmp_path, unique_name):
    """The shared catalog: Spark reads the same table through Postgres (its driver from the same
    jars). A new session of the same Spark context, whose catalog ``featurestream`` is the Postgres
    one: the Spark catalog must bear featurestream's catalog name (see ``spark_catalog_conf``)."""
    config = replace(stack, catalog_uri=postgres_uri)
    pg = spark.newSession()
    for key, value in spark_catalog_conf(postgres_uri, stack.offline_uri, stack.storage_options(),
                                         with_secrets=True).items():
        pg.conf.set(key, value)
    with FeatureStore(config) as store:
        g = store.create_feature_group(customers_group(unique_name("sparkpg"), partitions=2))
        assert store.ingest(g.name, [_record(i) for i in range(400)], progress=False).published == 400
        sink = Proc(config, list(SINK_FLAGS), tmp_path / "sink.log")
        try:
            wait_for(lambda: (t := store.offline_tables().existing(g)) is not None
                     and sum(recorded_offsets(t).values()) == 400, timeout_s=90, interval_s=0.5,
                     what=f"the sink to commit 400 offsets through the Postgres catalog\n{sink.tail()}")
        finally:
            sink.stop()
        _, rows = _same_snapshot_read(pg, store, g, stack.topic_prefix)
        assert len(rows) == 400


@pytest.mark.timeout(300)
def test_spark_says_which_table_is_missing(spark, stack):
    """Bad input: a table the catalog does not hold is named in Spark's error."""
    from pyspark.errors import AnalysisException

    with pytest.raises(AnalysisException, match="no_such_group"):
        spark.sql(f"SELECT * FROM {_table_name(stack.topic_prefix, 'no_such_group')}").collect()
