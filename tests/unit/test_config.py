"""Config: built from the environment, and handed to child processes the same way."""

from __future__ import annotations

from dataclasses import replace

import pytest

from featurestream.config import Config, ConfigError


def test_to_env_round_trips_through_from_env(tmp_path):
    cfg = Config(kafka_bootstrap="127.0.0.1:1", redis_url="redis://127.0.0.1:2/0", s3_endpoint_url="http://x:3",
                 aws_access_key_id="k", aws_secret_access_key="s", offline_uri="s3://b/p", state_dir=tmp_path,
                 topic_prefix="t")
    assert Config.from_env({**cfg.to_env(), "FEATURESTREAM_STATE_DIR": str(tmp_path)}) == cfg


def test_unset_endpoints_are_left_out_and_required_ones_name_their_variable():
    cfg = Config(kafka_bootstrap="127.0.0.1:1")
    assert set(cfg.to_env()) == {"FEATURESTREAM_KAFKA_BOOTSTRAP", "FEATURESTREAM_TOPIC_PREFIX"}
    with pytest.raises(ConfigError, match="FEATURESTREAM_REDIS_URL"):
        replace(cfg).require("redis_url")
