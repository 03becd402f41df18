"""The offline store through the front doors: SDK query/snapshot/point-in-time join and the CLI."""

from __future__ import annotations

import subprocess
import sys

import orjson
import pandas as pd
import pytest
import sqlglot

from schemas.errors import GroupNotFoundError
from tests.integration.helpers import customer, customers_group
from tests.integration.procs import Proc, stack_env
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration


def test_sdk_and_cli_read_what_the_sink_wrote(store, stack, tmp_path, unique_name):
    g = store.create_feature_group(customers_group(unique_name("off")))
    rows = [customer(i % 20, second=i, age=i) for i in range(100)]
    assert store.ingest(g.name, rows, progress=False).published == 100
    store.delete_record(g.name, "c3", "2031-01-01T01:00:00Z")
    sink = Proc(stack, ["sink", "--metrics-port", "0", "--max-age-s", "1"], tmp_path / "sink.log")
    try:
        wait_for(lambda: store.query(f'SELECT count(*) AS n FROM "{g.name}"').column("n")[0].as_py() == 101,
                 timeout_s=120, what=f"the sink to write 101 rows\n{sink.tail()}")
    finally:
        sink.stop()
    snap = store.snapshot(g.name).to_pandas()
    assert sorted(snap["customer_id"]) == sorted(f"c{i}" for i in range(20) if i != 3)
    assert snap.set_index("customer_id").loc["c5", "age"] == 85  # latest of c5: second 85
    as_of = store.snapshot(g.name, as_of="2031-01-01T00:00:30Z").to_pandas().set_index("customer_id")
    assert as_of.loc["c5", "age"] == 25 and "c3" in as_of.index  # before the delete
    entity = pd.DataFrame({"customer_id": ["c5", "c5", "c3", "nobody"],
                           "event_time": pd.to_datetime(["2031-01-01T00:00:30Z", "2031-01-01T00:00:05Z",
                                                         "2031-01-01T02:00:00Z", "2031-01-01T02:00:00Z"])})
    training = store.get_historical_features(entity, [f"{g.name}:age"]).to_pandas()
    assert training["customer_id"].tolist() == ["c5", "c5", "c3", "nobody"]
    assert training["age"].tolist()[:2] == [25, 5]
    assert training["age"].isna().tolist()[2:] == [True, True]  # deleted; no history
    with pytest.raises(GroupNotFoundError):
        store.get_historical_features(entity, ["no-such-group:age"])
    env = stack_env(stack)
    run = [sys.executable, "-m", "featurestream.cli"]
    out = subprocess.run([*run, "query", f'SELECT customer_id, age FROM "{g.name}" WHERE customer_id = \'c1\' '
                          "ORDER BY age", "--format", "json"], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert [r["age"] for r in orjson.loads(out.stdout)] == [1, 21, 41, 61, 81]
    bad = subprocess.run([*run, "query", "SELEC nonsense"], env=env, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and "error" in bad.stderr.lower()
    ddl = subprocess.run([*run, "ddl", g.name], env=env, capture_output=True, text=True, timeout=60)
    assert ddl.returncode == 0, ddl.stderr
    parsed = sqlglot.parse_one(ddl.stdout, read="hive")
    assert parsed.find(sqlglot.exp.PartitionedByProperty) is not None
