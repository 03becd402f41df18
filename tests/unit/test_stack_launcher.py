"""`up`/`status` decisions that need no server: external endpoints, stale pid files, bad tools."""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from featurestream.config import Config
from featurestream.stack import procs
from featurestream.stack.errors import ToolMissingError
from featurestream.stack.launcher import DEFAULT_OFFLINE_URI, _wait_released, status, up
from featurestream.stack.layout import StackLayout


def test_up_starts_nothing_when_the_environment_names_every_endpoint(tmp_path: Path) -> None:
    cfg = Config(kafka_bootstrap="kafka.example:9092", redis_url="redis://cache.example:6379/0",
                 s3_endpoint_url="https://s3.example", aws_access_key_id="AK", aws_secret_access_key="SK",
                 state_dir=tmp_path)
    said: list[str] = []
    endpoints = up(cfg, layout=StackLayout(tmp_path, tmp_path / "cache"), search_path=str(tmp_path), say=said.append)
    assert endpoints.exports() == {
        "FEATURESTREAM_KAFKA_BOOTSTRAP": "kafka.example:9092",
        "FEATURESTREAM_REDIS_URL": "redis://cache.example:6379/0",
        "FEATURESTREAM_S3_ENDPOINT_URL": "https://s3.example",
        "AWS_ACCESS_KEY_ID": "AK", "AWS_SECRET_ACCESS_KEY": "SK",
        "FEATURESTREAM_OFFLINE_URI": DEFAULT_OFFLINE_URI,
        # the embedded Iceberg catalog lives in the state dir; `up` exports its URI
        "FEATURESTREAM_CATALOG_URI": f"sqlite:///{tmp_path.resolve()}/iceberg-catalog.db",
    }
    assert len(said) == 3 and all("from the environment" in line for line in said)
    assert not (tmp_path / "run").exists()
    shared = up(replace(cfg, catalog_uri="postgresql+psycopg2://u:p@db.example/fs"),
                layout=StackLayout(tmp_path, tmp_path / "cache"), search_path=str(tmp_path))
    assert shared.exports()["FEATURESTREAM_CATALOG_URI"] == "postgresql+psycopg2://u:p@db.example/fs"


def test_up_without_java_fails_before_starting_anything(tmp_path: Path) -> None:
    cfg = Config(redis_url="redis://x:1/0", s3_endpoint_url="http://s3", state_dir=tmp_path)
    with pytest.raises(ToolMissingError, match="`java` was not found on PATH") as info:
        up(cfg, layout=StackLayout(tmp_path, tmp_path / "cache"), search_path=str(tmp_path / "empty"))
    assert "FEATURESTREAM_KAFKA_BOOTSTRAP" in str(info.value)
    assert not (tmp_path / "run").exists()


def test_status_reports_stopped_and_stale_services(tmp_path: Path) -> None:
    files = procs.PidFiles(StackLayout(tmp_path).run_dir)
    # pid 1 exists, but with another start time and executable: not ours, so "stale".
    files.write(procs.ProcessRecord("redis", 1, ["redis-server"], -5, "/nonexistent/redis-server",
                                    str(tmp_path / "redis.log"), {"endpoint": "redis://127.0.0.1:1/0"}))
    rows = {st.service: st for st in status(Config(state_dir=tmp_path))}
    assert rows["kafka"].state == "stopped" and rows["s3"].state == "stopped"
    assert rows["redis"].state == "stale" and not rows["redis"].answers
    assert "pid 1" in rows["redis"].line() and "does not answer" in rows["redis"].line()


def test_up_waits_for_a_dead_servers_ports_to_be_released_but_not_forever() -> None:
    held = socket.create_server(("127.0.0.1", 0))
    port = held.getsockname()[1]
    threading.Timer(0.3, held.close).start()  # the dying server lets go a moment later
    started = time.monotonic()
    assert _wait_released({"kafka": port}, timeout_s=30)
    assert 0.2 < time.monotonic() - started < 10
    with socket.create_server(("127.0.0.1", 0)) as squatter:  # never released: reported, not waited on forever
        started = time.monotonic()
        assert not _wait_released({"redis": squatter.getsockname()[1]}, timeout_s=0.3)
        assert time.monotonic() - started < 5
