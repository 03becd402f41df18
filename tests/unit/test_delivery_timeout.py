"""The delivery timeout: configuration, first contact vs later outages, and per-record accounting
(no broker needed; tests/integration/test_broker_outage.py kills a real one)."""

from __future__ import annotations

import secrets
import threading
from dataclasses import replace
from pathlib import Path

import orjson
import pytest
from confluent_kafka import KafkaError

from featurestream.cli import CliError, build_parser
from featurestream.cli._common import config_from_args
from featurestream.cli.publish_cmds import _unacknowledged_rows
from featurestream.config import Config, ConfigError
from streams.contact import FIRST_CONTACT_TIMEOUT_S, mark_answered, wait_budget
from streams.ingest import IngestIncompleteError, IngestResult, Rejection, compact_indexes
from streams.publisher import PublishBatch, producer_config
from streams.resume import record_digest


def test_the_default_is_kafkas_120_s_and_the_variable_and_the_flag_change_it(monkeypatch):
    assert Config().delivery_timeout_s == 120
    assert Config.from_env({}).delivery_timeout_s == 120
    assert Config.from_env({"FEATURESTREAM_DELIVERY_TIMEOUT": "30"}).delivery_timeout_s == 30
    monkeypatch.setenv("FEATURESTREAM_DELIVERY_TIMEOUT", "30")
    for argv in (["ingest", "g", "f.csv", "--delivery-timeout", "7.5"], ["put", "g", "{}", "--delivery-timeout", "7.5"],
                 ["delete", "g", "id", "--event-time", "1", "--delivery-timeout", "7.5"],
                 ["serve", "--delivery-timeout", "7.5"]):
        assert config_from_args(build_parser().parse_args(argv)).delivery_timeout_s == 7.5, argv
    assert config_from_args(build_parser().parse_args(["ingest", "g", "f.csv"])).delivery_timeout_s == 30


@pytest.mark.parametrize("text", ["soon", "0", "0.5", "-3", "inf", "nan", "3000000"])
def test_a_bad_delivery_timeout_names_the_variable(text):
    with pytest.raises(ConfigError, match="FEATURESTREAM_DELIVERY_TIMEOUT"):
        Config.from_env({"FEATURESTREAM_DELIVERY_TIMEOUT": text})


def test_a_changed_delivery_timeout_reaches_child_processes(tmp_path):
    cfg = replace(Config(kafka_bootstrap="127.0.0.1:1", state_dir=tmp_path), delivery_timeout_s=42.5)
    assert Config.from_env({**cfg.to_env(), "FEATURESTREAM_STATE_DIR": str(tmp_path)}) == cfg
    assert "FEATURESTREAM_DELIVERY_TIMEOUT" not in Config(kafka_bootstrap="127.0.0.1:1").to_env()


def test_the_producer_gives_up_after_the_delivery_timeout():
    assert producer_config("b:1", timeout_s=120)["message.timeout.ms"] == 120_000
    assert producer_config("b:1", timeout_s=2.5)["message.timeout.ms"] == 2_500


def test_a_broker_that_never_answered_gets_seconds_one_that_did_gets_the_delivery_timeout():
    bootstrap = f"127.0.0.1:{secrets.randbelow(60000) + 1}-{secrets.token_hex(4)}"
    assert wait_budget(bootstrap, 120) == FIRST_CONTACT_TIMEOUT_S < 10
    assert wait_budget(bootstrap, 2) == 2  # never more than the delivery timeout
    mark_answered(bootstrap)
    assert wait_budget(bootstrap, 120) == 120


def test_a_batch_names_exactly_the_records_not_acknowledged_and_stops_on_unavailability():
    abort = threading.Event()
    batch = PublishBatch("127.0.0.1:1", "fs.g", 6.0, abort)
    batch.sent = 4  # records 4 and 5 of 6 were never queued
    batch._on_delivery(0, None, None)
    batch._on_delivery(2, None, None)
    assert not abort.is_set()
    batch._on_delivery(1, KafkaError(KafkaError.MSG_SIZE_TOO_LARGE), None)  # a rejection, not an outage
    assert not abort.is_set()
    batch._on_delivery(3, KafkaError(KafkaError._MSG_TIMED_OUT), None)
    assert abort.is_set()
    missing = batch.unacknowledged(6)
    assert sorted(missing) == [1, 3, 4, 5]
    assert missing[3].startswith("not acknowledged by Kafka:") and "timed out" in missing[3]
    assert missing[4].startswith("not sent:") and missing[5].startswith("not sent:")
    assert batch.acked == 2


def test_a_quiet_batch_counts_what_no_failure_was_reported_for_once_the_producer_is_empty():
    """Publisher.bulk's quiet producer reports failures only, one callback per group of records."""
    abort = threading.Event()
    batch = PublishBatch("127.0.0.1:1", "fs.g", 6.0, abort, group=4)
    batch.sent = 10  # groups 0-3, 4-7 and 8-9; 10 and 11 of 12 were never queued
    batch._on_delivery(4, KafkaError(KafkaError.MSG_SIZE_TOO_LARGE), None)  # one record of 4-7
    for _ in range(2):  # both records of the last, short group
        batch._on_delivery(8, KafkaError(KafkaError._MSG_TIMED_OUT), None)
    assert abort.is_set() and batch.failed == 3
    in_flight = iter([3, 1, 0])
    batch.settle(lambda _s: next(in_flight))
    assert batch.acked == 4, "only group 0-3 had no failure"
    missing = batch.unacknowledged(12)
    assert sorted(missing) == [4, 5, 6, 7, 8, 9, 10, 11]
    assert all(missing[n].startswith("not acknowledged by Kafka:") for n in range(4, 10))
    assert "1 of the 4 records numbered 4-7" in missing[5] and "which ones is not reported" in missing[5]
    assert "timed out" in missing[9] and "records numbered" not in missing[9], "the whole group failed: exact"
    assert missing[10].startswith("not sent:")


def test_a_quiet_batch_whose_producer_never_empties_lists_every_row_as_unknown():
    batch = PublishBatch("127.0.0.1:1", "fs.g", 0.01, group=4)
    batch.sent = 5
    batch.queued_at -= 60  # past its deadline (delivery timeout + grace)
    batch.settle(lambda _s: 1)
    assert batch.acked == 0
    missing = batch.unacknowledged(5)
    assert sorted(missing) == [0, 1, 2, 3, 4] and all(m.startswith("acknowledgement unknown") for m in missing.values())


def test_a_quiet_batch_waits_for_the_last_batch_queued_beside_it():
    """Its producer empties only when every batch queued there is done: its deadline is the last one's."""
    batch = PublishBatch("127.0.0.1:1", "fs.g", 0.01, group=4)
    batch.sent = 2
    batch.queued_at -= 60
    in_flight = iter([2, 0])
    batch.settle(lambda _s: next(in_flight), queued_until=batch.queued_at + 120)
    assert batch.acked == 2 and batch.unacknowledged(2) == {}


@pytest.mark.parametrize("indexes", [[], [7], list(range(5, 5005)), [0, 1, 2, 4], [3, 2, 1, 4], [9, 3, 7],
                                     [0, 2, 1, 3]])
def test_the_row_indexes_kept_until_an_ingest_settles_are_compact_and_the_same(indexes):
    kept = compact_indexes(indexes)
    assert [int(i) for i in kept] == indexes
    if indexes == list(range(indexes[0], indexes[0] + len(indexes))) if indexes else True:
        assert isinstance(kept, range), "a part with no rejected row keeps no list"


def test_an_incomplete_ingest_names_its_rows_and_its_resume_token():
    result = IngestResult(group="g", total=5, published=3, api_invocation_time_ns=1234,
                          unacknowledged=[Rejection(1, "not acknowledged by Kafka: x"), Rejection(4, "not sent: x")],
                          delivery_error="Local: Message timed out")
    assert not result.ok and result.resume_token == 1234
    err = IngestIncompleteError(result)
    assert err.result is result
    assert "2 of 5 rows were not acknowledged" in str(err) and "rows 1, 4" in str(err) and "1234" in str(err)
    assert "2 NOT acknowledged" in result.summary()
    assert IngestResult(group="g", api_invocation_time_ns=1234).resume_token is None


def test_record_digests_tell_key_and_value_apart():
    assert record_digest(b"ab", b"c") != record_digest(b"a", b"bc")
    assert record_digest(b"k", b"v") == record_digest(b"k", b"v")


def _rejects(path: Path, lines: list[dict]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))
    return path


def test_resume_reads_the_unacknowledged_rows_of_one_ingest(tmp_path):
    good = _rejects(tmp_path / "r.jsonl", [
        {"index": 7, "reason": "bad value", "row": {}},  # invalid rows are not resumed
        {"index": 9, "reason": "not acknowledged by Kafka: x", "row": {}, "unacknowledged": True, "resume_token": 5},
        {"index": 3, "reason": "not sent: x", "row": {}, "unacknowledged": True, "resume_token": 5}])
    assert _unacknowledged_rows(good) == ({3, 9}, 5)
    mixed = _rejects(tmp_path / "m.jsonl", [{"index": 1, "unacknowledged": True, "resume_token": 5},
                                            {"index": 2, "unacknowledged": True, "resume_token": 6}])
    with pytest.raises(CliError, match="2 different ingests"):
        _unacknowledged_rows(mixed)
    with pytest.raises(CliError, match="no row as unacknowledged"):
        _unacknowledged_rows(_rejects(tmp_path / "n.jsonl", [{"index": 1, "reason": "bad"}]))
    with pytest.raises(CliError, match="non-negative"):
        _unacknowledged_rows(_rejects(tmp_path / "neg.jsonl", [{"index": -1, "unacknowledged": True,
                                                                 "resume_token": 5}]))


def test_resuming_rows_the_file_does_not_have_names_the_first_and_publishes_nothing(tmp_path):
    # The --rejects file of a longer FILE: refused before anything is published (no publisher needed).
    from schemas.group import FeatureGroup
    from schemas.types import FeatureDefinition, ScalarType
    from streams.datafiles import DataFileError
    from streams.fileingest import ingest_file

    g = FeatureGroup(name="g", record_identifier_name="id", event_time_name="t",
                     features=(FeatureDefinition("id", ScalarType.STRING), FeatureDefinition("t", ScalarType.STRING)))
    data = tmp_path / "d.csv"
    data.write_text("id,t\na,2031-01-01T00:00:00Z\nb,2031-01-01T00:00:01Z\n")
    with pytest.raises(DataFileError, match="has no row 5"):
        ingest_file(None, "topic", g, data, only={1, 5, 9}, resume_token=5)  # type: ignore[arg-type]
