"""Config: built from the environment, and handed to child processes the same way."""

from __future__ import annotations

from dataclasses import replace

import pytest

from featurestream.config import Config, ConfigError


def test_to_env_round_trips_through_from_env(tmp_path):
    cfg = Config(kafka_bootstrap="127.0.0.1:1", redis_url="redis://127.0.0.1:2/0", s3_endpoint_url="http://x:3",
                 aws_access_key_id="k", aws_secret_access_key="s", offline_uri="s3://b/p", state_dir=tmp_path,
                 topic_prefix="t", catalog_uri="sqlite:////var/lib/fs/catalog.db")
    assert Config.from_env({**cfg.to_env(), "FEATURESTREAM_STATE_DIR": str(tmp_path)}) == cfg


def test_catalog_uri_from_env_flag_or_the_state_dir(tmp_path):
    cfg = Config.from_env({"FEATURESTREAM_STATE_DIR": str(tmp_path)})
    assert cfg.catalog_uri is None and cfg.catalog() == f"sqlite:///{tmp_path.resolve()}/iceberg-catalog.db"
    env = {"FEATURESTREAM_CATALOG_URI": "postgresql+psycopg2://u@h/db"}
    assert Config.from_env(env).catalog() == "postgresql+psycopg2://u@h/db"
    assert Config.from_env(env, catalog_uri="sqlite:////x.db").catalog() == "sqlite:////x.db"  # the flag wins


def test_unset_endpoints_are_left_out_and_required_ones_name_their_variable():
    cfg = Config(kafka_bootstrap="127.0.0.1:1")
    assert set(cfg.to_env()) == {"FEATURESTREAM_KAFKA_BOOTSTRAP", "FEATURESTREAM_TOPIC_PREFIX"}
    with pytest.raises(ConfigError, match="FEATURESTREAM_REDIS_URL"):
        replace(cfg).require("redis_url")
