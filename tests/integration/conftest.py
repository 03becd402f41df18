"""The `stack` fixture: real Kafka, Redis and S3 for integration tests.

Where the endpoints come from, in order:
1. the environment (FEATURESTREAM_KAFKA_BOOTSTRAP etc., read through Config), for CI
   against managed services or a developer's own `eval "$(featurestream up)"`;
2. testcontainers, when a Docker engine answers;
3. the local stack (`featurestream up`'s code) in a throw-away state dir on free ports,
   sharing the default jar/binary cache so nothing is downloaded again; stopped at the end.
Services the environment names are used as they are; only the missing ones are started.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from featurestream.config import Config
from featurestream.sdk import FeatureStore
from featurestream.stack.launcher import DEFAULT_OFFLINE_URI, down, up
from featurestream.stack.layout import StackLayout, StackPorts
from featurestream.stack.ports import free_port


def _docker_answers() -> bool:
    docker = shutil.which("docker")
    if docker is None:
        return False
    try:
        return subprocess.run([docker, "info"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _distinct_free_ports(count: int) -> list[int]:
    ports: set[int] = set()
    while len(ports) < count:
        ports.add(free_port())
    return sorted(ports)


def _with_containers(base: Config, stack_cleanup: list) -> Config:
    """Start containers for what ``base`` does not name (needs a Docker engine)."""
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.waiting_utils import wait_for_logs

    cfg = base
    if not cfg.kafka_bootstrap:
        from testcontainers.community.kafka import KafkaContainer

        kafka = KafkaContainer("confluentinc/cp-kafka:7.6.0").with_kraft()
        kafka.start()
        stack_cleanup.append(kafka.stop)
        cfg = replace(cfg, kafka_bootstrap=kafka.get_bootstrap_server())
    if not cfg.redis_url:
        from testcontainers.community.redis import RedisContainer

        redis = RedisContainer("redis:7")
        redis.start()
        stack_cleanup.append(redis.stop)
        cfg = replace(cfg, redis_url=f"redis://{redis.get_container_host_ip()}:{redis.get_exposed_port(6379)}/0")
    if not cfg.s3_endpoint_url:
        key, secret = "featurestream", "featurestream-local-secret"
        minio = (DockerContainer("minio/minio:latest").with_command("server /data")
                 .with_env("MINIO_ROOT_USER", key).with_env("MINIO_ROOT_PASSWORD", secret)
                 .with_exposed_ports(9000))
        minio.start()
        stack_cleanup.append(minio.stop)
        wait_for_logs(minio, "API:", timeout=60)
        endpoint = f"http://{minio.get_container_host_ip()}:{minio.get_exposed_port(9000)}"
        from featurestream.stack.s3_server import bucket_of, ensure_bucket

        offline = cfg.offline_uri or DEFAULT_OFFLINE_URI
        ensure_bucket(endpoint, key, secret, bucket_of(offline))
        cfg = replace(cfg, s3_endpoint_url=endpoint, aws_access_key_id=key, aws_secret_access_key=secret,
                      offline_uri=offline)
    return cfg


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory, topic_prefix: str) -> Iterator[Config]:
    """A Config whose endpoints answer, with this session's own topic prefix."""
    base = Config.from_env()
    if base.kafka_bootstrap and base.redis_url and base.s3_endpoint_url:
        yield replace(base, topic_prefix=topic_prefix, offline_uri=base.offline_uri or DEFAULT_OFFLINE_URI)
        return
    if _docker_answers():
        cleanup: list = []
        try:
            yield replace(_with_containers(base, cleanup), topic_prefix=topic_prefix)
        finally:
            for stop in reversed(cleanup):
                stop()
        return
    state_dir = tmp_path_factory.mktemp("featurestream-state")
    kafka_port, controller_port, redis_port, s3_port = _distinct_free_ports(4)
    ports = StackPorts(kafka=kafka_port, controller=controller_port, redis=redis_port, s3=s3_port)
    config = replace(base, state_dir=state_dir)
    try:
        endpoints = up(config, ports=ports, layout=StackLayout(state_dir))
        yield replace(endpoints.apply(config), topic_prefix=topic_prefix)
    finally:
        down(state_dir)


@pytest.fixture
def store(stack: Config) -> Iterator[FeatureStore]:
    """The SDK facade on the test stack (a module may define its own ``store`` instead)."""
    with FeatureStore(stack) as fs:
        yield fs


@pytest.fixture(scope="module")
def s3_config(request: pytest.FixtureRequest) -> Config:
    """S3 only: the environment's server if it names one, else the session's stack."""
    cfg = Config.from_env()
    if not cfg.s3_endpoint_url:
        cfg = request.getfixturevalue("stack")
    if not cfg.offline_uri or not cfg.offline_uri.startswith("s3://"):
        cfg = replace(cfg, offline_uri="s3://featurestream-offline-test")
    return cfg


@pytest.fixture(scope="session")
def spark(stack: Config) -> Iterator[Any]:
    """One local Spark session for the test session (its start costs tens of seconds; the Spark
    interop and the offline aggregation tests share it): loopback only, no UI, small driver; the Iceberg
    catalog ``featurestream`` is the stack's catalog, configured as ``featurestream ddl`` says."""
    from pyspark.sql import SparkSession

    from featurestream.stack import spark_jars
    from featurestream.stack.layout import DEFAULT_CACHE_DIR
    from sinks.offline.engine_ddl import spark_catalog_conf

    jars = spark_jars.jar_paths(DEFAULT_CACHE_DIR)
    # Loopback only: without it Spark binds its block manager to the host's first interface.
    env = pytest.MonkeyPatch()
    env.setenv("SPARK_LOCAL_IP", "127.0.0.1")
    builder = (SparkSession.builder.master("local[2]").appName("featurestream-interop")
               .config("spark.jars", ",".join(str(j) for j in jars))
               .config("spark.driver.memory", "1g")
               .config("spark.ui.enabled", "false")
               .config("spark.ui.showConsoleProgress", "false")
               .config("spark.driver.host", "127.0.0.1")
               .config("spark.driver.bindAddress", "127.0.0.1")
               .config("spark.sql.session.timeZone", "UTC")
               .config("spark.sql.shuffle.partitions", "2"))
    for key, value in spark_catalog_conf(stack.catalog(), stack.offline_uri, stack.storage_options(),
                                         with_secrets=True).items():
        builder = builder.config(key, value)
    try:
        session = builder.getOrCreate()
    finally:
        env.undo()
    session.sparkContext.setLogLevel("ERROR")
    try:
        _warm_up(session, stack)
        yield session
    finally:
        session.stop()


def _warm_up(spark: Any, stack: Config) -> None:
    """Spark's first Iceberg read loads the JDBC catalog, S3FileIO and Parquet classes (tens of
    seconds on a loaded machine): pay it here, on a small table our writer commits, so the tests'
    reads race the sink on equal terms."""
    from sinks.offline.catalog import CATALOG_NAME, OfflineTables
    from sinks.offline.writer import OfflineWriter
    from tests.support.offline import TOPIC, make_group, put

    g = make_group("spark-warm-up", offline_uri=f"{stack.offline_uri}/spark-warm-up-1")
    writer = OfflineWriter(OfflineTables.open(stack.catalog(), stack.topic_prefix, stack.storage_options()))
    for o in range(10):
        writer.add(g, put(o), TOPIC, 0, o)
    writer.flush(TOPIC, 0)
    rows = spark.sql(f"SELECT * FROM {CATALOG_NAME}.`{stack.topic_prefix}`.`{g.name}`").toArrow()
    assert sorted(rows["_kafka_offset"].to_pylist()) == list(range(10))
