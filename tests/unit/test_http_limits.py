"""The HTTP API's bounds and what its failures tell a client: pure parts (servers: test_http_api.py)."""

from __future__ import annotations

import logging

import orjson
import pytest
import redis

from featurestream.http.batch_get import BoundedBatchGet, _Entry, _unprocessed
from featurestream.http.errors import backend_of, from_exception
from featurestream.http.limits import MIN_MAX_RESPONSE_BYTES, Limits, LimitsError
from featurestream.http.quiet_log import QuietLog
from schemas.errors import ServiceUnavailableError
from schemas.group import FeatureGroup
from schemas.types import FeatureDefinition

ADDRESSES = ("10.1.2.3", "6379", "9092", "redis://", "secret")


def _group(name: str = "orders") -> FeatureGroup:
    return FeatureGroup(name=name, record_identifier_name="id", event_time_name="et",
                        features=[FeatureDefinition("id", "String"), FeatureDefinition("et", "String")],
                        offline_enabled=False)


def test_limits_refuse_values_that_would_disable_them():
    assert Limits().max_response_bytes == 16 * 1024 * 1024 and Limits().body_timeout_s == 30
    for bad in (dict(max_response_bytes=MIN_MAX_RESPONSE_BYTES - 1), dict(body_timeout_s=0),
                dict(max_body_bytes=10)):
        with pytest.raises(LimitsError, match=next(iter(bad))):
            Limits(**bad)


def test_service_unavailable_names_the_service_not_its_address():
    cases = [
        (ServiceUnavailableError("Redis at redis://:***@10.1.2.3:6379 did not answer (Error 111 connecting to "
                                 "10.1.2.3:6379. Connection refused.)"), "redis"),
        (ServiceUnavailableError("Kafka at 10.1.2.3:9092 did not acknowledge the record within 20 s"), "kafka"),
        (ServiceUnavailableError("could not read the registry topic 'x' up to offset 3 within 10 s"), "kafka"),
        (ServiceUnavailableError("S3 at secret down"), "a backend service"),
    ]
    try:
        raise ServiceUnavailableError("did not answer at 10.1.2.3:6379") from redis.ConnectionError("Error 111")
    except ServiceUnavailableError as exc:
        cases.append((exc, "redis"))  # the driver error it came from names the service
    for exc, backend in cases:
        assert backend_of(exc) == backend
        err = from_exception(exc)
        assert (err.status, err.code_for("runtime")) == (503, "ServiceUnavailable")
        body = orjson.loads(err.body("runtime"))["message"]
        assert f"{backend} is unavailable" in body
        assert not any(a in body for a in ADDRESSES), body


def test_quiet_log_logs_a_cause_once_per_period_and_counts_the_rest(caplog):
    now = [0.0]
    quiet = QuietLog(logging.getLogger("test.quiet"), every_s=10, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="test.quiet"):
        assert quiet.warning("redis", "redis down: %s", "detail")
        for _ in range(500):
            assert not quiet.warning("redis", "redis down: %s", "detail")
        assert quiet.warning("kafka", "kafka down")  # another cause is not held back
        now[0] = 10.5
        assert quiet.warning("redis", "redis down: %s", "detail")
    messages = [r.getMessage() for r in caplog.records]
    assert messages == ["redis down: detail", "kafka down",
                        "redis down: detail (and 500 more times since it was last logged)"]


def test_unprocessed_identifiers_can_be_sent_back_as_a_request():
    plain, subset = _Entry(_group(), "orders", None), _Entry(_group(), "orders", ("et",))
    pending = [(plain, f"id-{i}") for i in range(250)] + [(subset, "a"), (plain, "id-250")]
    out = _unprocessed(pending)
    assert [len(e["RecordIdentifiersValueAsString"]) for e in out] == [100, 100, 51, 1]
    assert out[-1] == {"FeatureGroupName": "orders", "RecordIdentifiersValueAsString": ["a"], "FeatureNames": ["et"]}
    assert "FeatureNames" not in out[0]
    assert sum((e["RecordIdentifiersValueAsString"] for e in out), []) == [f"id-{i}" for i in range(251)] + ["a"]


def test_a_round_never_mixes_two_entries_of_one_group():
    a, b, other = _Entry(_group(), "orders", None), _Entry(_group(), "orders", ("et",)), _Entry(_group("x"), "x", None)
    pending = [(a, "1"), (a, "2"), (other, "1"), (b, "1"), (b, "2")]
    assert BoundedBatchGet._round(pending, 0, 10) == pending[:3]
    assert BoundedBatchGet._round(pending, 3, 10) == pending[3:]
    assert BoundedBatchGet._round(pending, 0, 2) == pending[:2]


@pytest.mark.parametrize("flag, value", [("--max-response-bytes", "1000"), ("--body-timeout", "0"),
                                         ("--max-body-bytes", "10")])
def test_serve_refuses_a_limit_that_would_switch_it_off(flag, value, capsys):
    from featurestream.cli import main

    assert main(["serve", flag, value]) == 2  # checked before any endpoint is needed
    assert flag in capsys.readouterr().err
