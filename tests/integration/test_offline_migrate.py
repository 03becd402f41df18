"""`featurestream offline migrate`: a pre-Iceberg offline table (written as the old sink did, on the
real S3 server) into the group's Iceberg table, once, and the sink resumes after it."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from schemas.wire import decode
from sinks.offline.rows import rows_to_table
from sinks.offline.writer import OfflineWriter
from tests.integration.helpers import customer, customers_group, read_topic
from tests.integration.procs import Proc, stack_env
from tests.support.legacy_layout import write_legacy_table
from tests.support.offline import table_coordinates
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration


def _migrate(stack, group: str, *flags: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "featurestream.cli", "offline", "migrate", group, *flags],
                          env=stack_env(stack), capture_output=True, text=True, timeout=180)


def _comparable(table) -> list[dict]:
    """Rows by Kafka position, the event time exact (ns); api_invocation_time to the microsecond (the
    Iceberg column's precision, our own clock's reading); write_time is when a file was written."""
    table = table.drop_columns(["write_time"])
    for name in ("event_time", "api_invocation_time"):
        i = table.schema.get_field_index(name)
        ns = table.column(name).cast(pa.int64())
        table = table.set_column(i, name, ns if name == "event_time" else pc.divide(ns, 1000))  # positive: floor
    return sorted(table.to_pylist(), key=lambda r: (r["_kafka_partition"], r["_kafka_offset"]))


@pytest.mark.timeout(400)
def test_migrate_rewrites_the_old_layout_once_and_the_sink_resumes_after_it(store, stack, tmp_path, unique_name):
    g = store.create_feature_group(customers_group(unique_name("migrate"), partitions=2))
    topic = store.registry.topic_of(g.name)
    assert store.ingest(g.name, [customer(i, second=i % 3600) for i in range(600)], progress=False).published == 600
    messages = read_topic(stack, topic)
    # The old sink had written the first 200 offsets of each partition before the upgrade.
    items = [(decode(m.key(), m.value(), m.headers()), topic, m.partition(), m.offset())
             for m in messages if m.offset() < 200]
    written = write_legacy_table(g, items, stack.storage_options())
    assert written["compacted_inputs"] >= 2

    killed = _migrate(stack, g.name, "--kill-after-upload")
    assert killed.returncode == -9, killed.stderr
    tables = store.offline_tables()
    assert table_coordinates(tables, g).total() == 0  # uploaded, never committed: the table holds nothing

    first = _migrate(stack, g.name)
    assert first.returncode == 0, first.stderr
    assert f"migrated {len(items)} rows from" in first.stdout and "rewritten" in first.stdout, first.stdout
    assert "read 1/" in first.stderr  # progress lines
    assert table_coordinates(tables, g) == Counter((topic, p, o) for _, _, p, o in items)
    source = rows_to_table(g, items, 0)
    assert _comparable(store.query(f'SELECT * FROM "{g.name}"')) == _comparable(source)

    snapshot = tables.existing(g).current_snapshot().snapshot_id
    again = _migrate(stack, g.name)
    assert again.returncode == 0, again.stderr
    assert "already migrated" in again.stdout and "nothing to do" in again.stdout, again.stdout
    assert tables.existing(g).current_snapshot().snapshot_id == snapshot

    sink = Proc(stack, ["sink", "--metrics-port", "0", "--max-age-s", "0.5", "--compact-every-s", "0"],
                tmp_path / "sink.log")
    try:
        expected = Counter((topic, m.partition(), m.offset()) for m in messages)
        wait_for(lambda: table_coordinates(tables, g) == expected, timeout_s=90, interval_s=0.5,
                 what=f"the sink to add offsets 200.. once after the migrated rows\n{sink.tail()}")
    finally:
        sink.stop()


def test_migrate_bad_input_says_what_is_wrong(store, stack, unique_name):
    unknown = _migrate(stack, "no-such-group-x")
    assert unknown.returncode != 0 and "no-such-group-x" in unknown.stderr, unknown.stderr
    g = store.create_feature_group(customers_group(unique_name("nolegacy"), partitions=1))
    empty = _migrate(stack, g.name)
    assert empty.returncode != 0 and "no pre-Iceberg layout" in empty.stderr, empty.stderr
    off = store.create_feature_group(customers_group(unique_name("nooffline"), offline=False))
    no_offline = _migrate(stack, off.name)
    assert no_offline.returncode != 0 and "no offline store" in no_offline.stderr, no_offline.stderr
    # an Iceberg table a sink already wrote to: migrating would mix two histories
    mixed = store.create_feature_group(customers_group(unique_name("mixed"), partitions=1))
    topic = store.registry.topic_of(mixed.name)
    store.ingest(mixed.name, [customer(i) for i in range(10)], progress=False)
    items = [(decode(m.key(), m.value(), m.headers()), topic, m.partition(), m.offset())
             for m in read_topic(stack, topic)]
    write_legacy_table(mixed, items[:5], stack.storage_options(), batch=2)
    writer = OfflineWriter(store.offline_tables())
    for msg, t, p, o in items[5:]:
        writer.add(mixed, msg, t, p, o)
    writer.flush(topic, 0)
    refused = _migrate(stack, mixed.name)
    assert refused.returncode != 0 and "already holds rows" in refused.stderr, refused.stderr
    assert table_coordinates(store.offline_tables(), mixed).total() == 5  # unchanged
    missing = subprocess.run([sys.executable, "-m", "featurestream.cli", "offline", "migrate"],
                             env=stack_env(stack), capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and "group" in missing.stderr
