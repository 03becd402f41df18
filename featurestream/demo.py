"""`featurestream demo` (what `make demo` runs): the whole flow end to end on the local stack.

1. bring the local stack up (Kafka, Redis, S3) unless endpoints are configured;
2. create two demo feature groups and publish their data through `ingest`; create an aggregation
   group over the orders (backfilled from the topic's history);
3. run the online processor and read records back online (SDK, then the HTTP API with boto3),
   the aggregates included;
4. run the offline sink, then query the offline store: the latest snapshot and a
   point-in-time join for training data.
Processes the demo starts (processor, sink, API server) are stopped at the end; the stack
stays up for you to explore (`featurestream down` stops it).
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from featurestream.config import Config
from featurestream.sdk import FeatureStore
from schemas.errors import GroupExistsError
from schemas.group import FeatureGroup
from schemas.types import CollectionType, FeatureDefinition, ScalarType

CUSTOMERS = "demo-customers"
ORDERS = "demo-orders"
ORDER_STATS = "demo-order-stats"  # an aggregation group over ORDERS' events
ORDER_STATS_FEATURES = ["spend_7d:sum,count,max@1d,lifetime", "orders_7d:last_n(3)"]
START = datetime(2026, 1, 1, tzinfo=UTC)


def say(text: str) -> None:
    print(f"\n== {text}", flush=True)


def demo_groups() -> list[FeatureGroup]:
    customers = FeatureGroup(
        name=CUSTOMERS, record_identifier_name="customer_id", event_time_name="event_time",
        features=(FeatureDefinition("customer_id", ScalarType.STRING), FeatureDefinition("event_time", ScalarType.STRING),
                  FeatureDefinition("age", ScalarType.INTEGRAL), FeatureDefinition("city", ScalarType.STRING),
                  FeatureDefinition("lifetime_value", ScalarType.FRACTIONAL),
                  FeatureDefinition("segments", ScalarType.STRING, CollectionType.LIST)),
        description="demo: customer profile")
    orders = FeatureGroup(
        name=ORDERS, record_identifier_name="customer_id", event_time_name="event_time",
        features=(FeatureDefinition("customer_id", ScalarType.STRING), FeatureDefinition("event_time", ScalarType.STRING),
                  FeatureDefinition("orders_7d", ScalarType.INTEGRAL), FeatureDefinition("spend_7d", ScalarType.FRACTIONAL),
                  FeatureDefinition("basket_embedding", ScalarType.FRACTIONAL, CollectionType.VECTOR, 4)),
        description="demo: rolling order aggregates")
    return [customers, orders]


def demo_rows(n_customers: int = 500, events: int = 6) -> tuple[list[dict], list[dict]]:
    rng = random.Random(42)
    cities = ["Lyon", "Porto", "Oslo", "Kyiv", "Lima"]
    customers, orders = [], []
    for i in range(n_customers):
        cid = f"cust-{i:04d}"
        for e in range(events):
            t = (START + timedelta(hours=6 * e, minutes=rng.randrange(60))).strftime("%Y-%m-%dT%H:%M:%SZ")
            customers.append({"customer_id": cid, "event_time": t, "age": 20 + i % 50, "city": rng.choice(cities),
                              "lifetime_value": round(100 * e + rng.random() * 50, 2),
                              "segments": rng.sample(["new", "loyal", "vip", "churn-risk"], 2)})
            orders.append({"customer_id": cid, "event_time": t, "orders_7d": e + rng.randrange(3),
                           "spend_7d": round(rng.random() * 300, 2),
                           "basket_embedding": [round(rng.random(), 3) for _ in range(4)]})
    return customers, orders


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn(args: list[str], config: Config, log: Path) -> subprocess.Popen:
    env = {**os.environ, **config.to_env()}
    return subprocess.Popen([sys.executable, "-m", "featurestream.cli", *args], env=env, stdout=log.open("wb"),
                            stderr=subprocess.STDOUT, start_new_session=True)


def _wait(what: str, check: Any, timeout_s: float) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.2)
    raise RuntimeError(f"demo: timed out after {timeout_s:.0f} s waiting for {what}")


def run_demo(config: Config) -> int:
    from featurestream.stack.launcher import up

    say("1. the local stack (Kafka, Redis, S3)")
    if not (config.kafka_bootstrap and config.redis_url and config.s3_endpoint_url):
        endpoints = up(config, say=lambda m: print(f"   {m}", flush=True))
        config = endpoints.apply(config)
    for name, value in (("Kafka", config.kafka_bootstrap), ("Redis", config.redis_url),
                        ("S3", config.s3_endpoint_url), ("offline store", config.offline_uri)):
        print(f"   {name:<14} {value}")
    logs = config.state_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    children: list[subprocess.Popen] = []
    try:
        with FeatureStore(config) as store:
            say("2. feature groups")
            try:  # the aggregation group first: it is defined over the orders
                store.delete_feature_group(ORDER_STATS, purge=True)
            except Exception:  # noqa: BLE001 - absent on a first run
                pass
            for group in demo_groups():
                try:
                    store.delete_feature_group(group.name, purge=True)
                    print(f"   deleted the previous run's {group.name!r}")
                except Exception:  # noqa: BLE001 - absent on a first run
                    pass
                try:
                    created = store.create_feature_group(group)
                except GroupExistsError:
                    created = store.describe_feature_group(group.name)
                print(f"   {created.name}: {len(created.features)} features, topic "
                      f"{store.registry.topic_of(created)}, offline at {created.offline_uri}")

            say("3. publish (ingest validates every row; one bad row shows the rejection report)")
            customers, orders = demo_rows()
            bad = dict(customers[0], age="not a number")
            res = store.ingest(CUSTOMERS, [*customers, bad], progress=False)
            print(f"   {res.summary()}")
            for r in res.rejected:
                print(f"   rejected row {r.index}: {r.reason}")
            print(f"   {store.ingest(ORDERS, orders, progress=False).summary()}")
            started = time.perf_counter()
            stats = store.create_aggregation_group(ORDER_STATS, ORDERS, "customer_id", ORDER_STATS_FEATURES,
                                                   description="demo: rolling aggregates of the orders")
            print(f"   aggregation group {stats.name!r} over {ORDERS!r} by customer_id: "
                  f"{', '.join(f.name for f in stats.features[2:])}; backfilled from the topic's "
                  f"{len(orders)} events in {time.perf_counter() - started:.1f} s")

            say("4. online: the stream processor keeps the latest record per customer in Redis")
            children.append(_spawn(["process", "--metrics-port", "0"], config, logs / "demo-process.log"))
            latest = max((r for r in customers if r["customer_id"] == "cust-0007"), key=lambda r: r["event_time"])
            got = _wait("the processor to apply the demo data",
                        lambda: (rec := store.get_record(CUSTOMERS, "cust-0007")) and
                        rec["event_time"] == latest["event_time"] and rec, 120)
            print(f"   get_record({CUSTOMERS!r}, 'cust-0007') -> {got}")
            res = store.batch_get_record([(CUSTOMERS, ["cust-0001", "cust-0002", "nobody"], ["city", "age"]),
                                          (ORDERS, ["cust-0001"], None)])
            print(f"   batch_get_record -> {len(res.records)} records, missing {res.missing}")
            print(f"   get_record({ORDER_STATS!r}, 'cust-0007') -> {store.get_record(ORDER_STATS, 'cust-0007')}")
            at = datetime(2026, 1, 2, 12, tzinfo=UTC)
            day = store.online.get_record(stats, "cust-0007", ["spend_7d_sum_1d", "spend_7d_count_1d"],
                                          now_ns=int(at.timestamp()) * 10**9)
            print(f"   the same read as at {at:%Y-%m-%dT%H:%MZ} (sliding 1-day window) -> {day}")

            say("5. the HTTP API, read with an unmodified boto3 client")
            port = _free_port()
            children.append(_spawn(["serve", "--port", str(port), "--workers", "1"], config, logs / "demo-serve.log"))
            print(_http_read(config, port))

            say("6. offline: the sink writes the full history as Apache Iceberg tables; SQL, snapshot, "
                "time travel by commit, point-in-time join")
            before_sink = datetime.now(UTC)
            children.append(_spawn(["sink", "--metrics-port", "0", "--max-age-s", "3"], config,
                                   logs / "demo-sink.log"))
            total = len(customers)
            _wait("the sink to write every customer row",
                  lambda: store.query(f'SELECT count(*) AS n FROM "{CUSTOMERS}"').column("n")[0].as_py() >= total,
                  180)
            print(store.query(f'SELECT city, count(*) AS rows, round(avg(lifetime_value), 1) AS avg_ltv '
                              f'FROM "{CUSTOMERS}" GROUP BY city ORDER BY city').to_pandas().to_string(index=False))
            then = store.query(f'SELECT count(*) AS n FROM "{CUSTOMERS}"', as_of_commit=before_sink)
            print(f"\n   time travel by commit: the table as committed at {before_sink:%H:%M:%S} (before the sink "
                  f"ran) held {then.column('n')[0].as_py()} rows; now it holds {total}")
            snap = store.snapshot(CUSTOMERS).to_pandas()
            print(f"\n   latest snapshot: {len(snap)} customers; first rows:")
            print(snap[["customer_id", "event_time", "age", "city", "lifetime_value"]].head(3).to_string(index=False))
            import pandas as pd

            entity = pd.DataFrame({"customer_id": ["cust-0001", "cust-0001", "cust-0002", "nobody"],
                                   "event_time": pd.to_datetime(["2026-01-01T07:00:00Z", "2026-01-02T07:00:00Z",
                                                                 "2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z"])})
            training = store.get_historical_features(
                entity, [f"{CUSTOMERS}:lifetime_value", f"{CUSTOMERS}:city", f"{ORDERS}:spend_7d"]).to_pandas()
            print("\n   point-in-time join (training data: features as they were at each row's time):")
            print(training.to_string(index=False))
            print(f"\n   how Spark, Trino and Athena read the same table (`featurestream ddl {CUSTOMERS}`):\n"
                  f"{store.ddl(CUSTOMERS)}")
        say("done: the stack is still up. `eval \"$(featurestream up)\"` configures your shell; "
            "`featurestream down` stops it.")
        return 0
    finally:
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in children:
            try:
                child.wait(timeout=20)
            except subprocess.TimeoutExpired:
                child.kill()


def _http_read(config: Config, port: int) -> str:
    try:
        import boto3
    except ImportError:
        return "   (boto3 is not installed: `pip install boto3` to see this step)"

    client = boto3.client("sagemaker-featurestore-runtime", endpoint_url=f"http://127.0.0.1:{port}",
                          region_name="us-east-1", aws_access_key_id=config.aws_access_key_id,
                          aws_secret_access_key=config.aws_secret_access_key)
    deadline = time.monotonic() + 60
    while True:
        try:
            resp = client.get_record(FeatureGroupName=CUSTOMERS, RecordIdentifierValueAsString="cust-0007")
            record = {f["FeatureName"]: f.get("ValueAsString", f.get("ValueAsStringList")) for f in resp["Record"]}
            return f"   boto3 get_record(FeatureGroupName={CUSTOMERS!r}, 'cust-0007') -> {record}"
        except Exception:  # the server may still be starting
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)

