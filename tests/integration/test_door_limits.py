"""Every limit a worker holds a record to is checked at the door first, and answered with a
validation error that names it (issue 17): event times past what the stores hold, enormous
epochs, records whose Kafka message would be too large; and a BatchWriteRecord with a bad entry
publishes the good ones and reports the bad one, never a 500 after a partial publish."""

from __future__ import annotations

from collections import Counter
from datetime import datetime

import pytest
from botocore.exceptions import ClientError
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from schemas.errors import RecordValidationError
from schemas.eventtime import format_iso
from tests.integration.helpers import customer, customers_group, dead_letters, read_topic
from tests.integration.procs import Proc
from tests.support.http_api import boto_clients, error_of, server_env, start_server, stop_server, wire_record
from tests.support.offline import table_coordinates
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration

# (event time as sent, what the refusal must name)
OUT_OF_RANGE = [
    ("2500-01-01T00:00:00Z", "after 2262-04-11T23:47:16.854775807Z"),
    ("9999-12-31T23:59:59Z", "after 2262-04-11T23:47:16.854775807Z"),
    ("2262-04-11T23:47:16.854775808Z", "after 2262-04-11T23:47:16.854775807Z"),
    ("1" * 10_000, "after 2262-04-11T23:47:16.854775807Z"),
    ("1969-12-31T23:59:59Z", "before 1970-01-01"),
]
# A String value within every per-value and per-record limit (200,000 characters of 350 KB)
# whose JSON form (each control character as a 6-byte \u0001 escape) passes Kafka's message size.
HUGE_WHEN_ENCODED = "\u0001" * 200_000


@pytest.fixture(scope="module")
def http(stack, tmp_path_factory):
    env = server_env(stack)
    server, url = start_server(env, tmp_path_factory.mktemp("door"))
    yield {"url": url, "key": env["AWS_ACCESS_KEY_ID"], "secret": env["AWS_SECRET_ACCESS_KEY"]}
    stop_server(server)


@pytest.mark.parametrize(("event_time", "named"), OUT_OF_RANGE)
def test_put_record_refuses_an_event_time_the_stores_cannot_hold(store, http, unique_name, event_time, named):
    g = store.create_feature_group(customers_group(unique_name("range"), partitions=1))
    _, runtime = boto_clients(http)
    code, message, status = error_of(runtime.put_record, FeatureGroupName=g.name,
                                     Record=wire_record({**customer(1), "event_time": event_time}))
    assert (code, status) == ("ValidationError", 400) and named in message, message
    with pytest.raises(RecordValidationError, match=named):
        store.put_record(g.name, {**customer(1), "event_time": event_time})


def test_batch_write_with_one_bad_entry_publishes_the_good_one_and_reports_the_bad(store, stack, http,
                                                                                   unique_name):
    g = store.create_feature_group(customers_group(unique_name("batch"), partitions=1))
    _, runtime = boto_clients(http)
    good = customer(1)
    answer = runtime.batch_write_record(Entries=[
        {"FeatureGroupName": g.name, "Record": wire_record(good)},
        {"FeatureGroupName": g.name, "Record": wire_record({**customer(2), "event_time": "2500-01-01T00:00:00Z"})},
        {"FeatureGroupName": g.name, "Record": wire_record({**customer(3), "city": HUGE_WHEN_ENCODED})},
    ])
    assert answer["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert answer["UnprocessedEntries"] == []
    errors = {e["Entry"]["Record"][0]["ValueAsString"]: e for e in answer["Errors"]}
    assert set(errors) == {"c2", "c3"}
    assert errors["c2"]["ErrorCode"] == "ValidationError" and "2262-04-11" in errors["c2"]["ErrorMessage"]
    assert "message size limit" in errors["c3"]["ErrorMessage"]
    published = [m.key() for m in read_topic(stack, store.registry.topic_of(g.name))]
    assert published == [b"c1"]


def test_a_record_too_large_for_one_kafka_message_is_refused_at_every_door(store, stack, http, unique_name):
    g = store.create_feature_group(customers_group(unique_name("size"), partitions=1))
    big = {**customer(1), "city": HUGE_WHEN_ENCODED}
    _, runtime = boto_clients(http)
    code, message, status = error_of(runtime.put_record, FeatureGroupName=g.name, Record=wire_record(big))
    assert (code, status) == ("ValidationError", 400), message
    assert "1,000,000-byte message size limit" in message
    with pytest.raises(RecordValidationError, match="message size limit"):
        store.put_record(g.name, big)
    result = store.ingest(g.name, [customer(0), big, customer(2)], progress=False)
    assert result.published == 2
    assert [(r.index, "message size limit" in r.reason) for r in result.rejected] == [(1, True)]
    assert sorted(m.key() for m in read_topic(stack, store.registry.topic_of(g.name))) == [b"c0", b"c2"]


# ------------------------------------------------------------ refused at the door, or applied

def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + (f".{moment.microsecond:06d}Z" if moment.microsecond else "Z")


# Event times across the whole range and beyond it: before 1970, the last nanoseconds before and
# after 2262-04-11T23:47:16.854775807Z, year 9999, epochs of any size as numbers and as text.
EVENT_TIMES = st.one_of(
    st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59)).map(_iso),
    st.integers(min_value=2**63 - 10**6, max_value=2**63 + 10**6).map(format_iso),
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
    st.integers(min_value=9_223_372_030, max_value=9_223_372_040).map(str),
    st.decimals(min_value=-(10**12), max_value=10**12, places=9).map(str),
    st.sampled_from(["1" * 10_000, "-" + "9" * 5_000, "1e400", "2262-04-11T23:47:17Z", "NaN", "",
                     "1969-12-31T23:59:59.999999999Z", "1970-01-01T00:00:00Z"]),
)


@pytest.fixture(scope="module")
def pipeline(stack, tmp_path_factory):
    """A processor and a sink for this module, both ready."""
    tmp = tmp_path_factory.mktemp("door-pipeline")
    procs = [Proc(stack, ["process", "--metrics-port", "0", "--log-level", "warning"], tmp / "process.log"),
             Proc(stack, ["sink", "--metrics-port", "0", "--max-age-s", "1"], tmp / "sink.log")]
    yield procs
    for p in procs:
        p.stop()


@settings(max_examples=4, deadline=None, phases=[Phase.explicit, Phase.reuse, Phase.generate],
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(times=st.lists(EVENT_TIMES, min_size=12, max_size=12))
def test_every_record_is_refused_at_the_door_or_applied_by_every_store(times, store, stack, http, pipeline,
                                                                      unique_name):
    g = store.create_feature_group(customers_group(unique_name("door"), partitions=2))
    _, runtime = boto_clients(http)
    rows = [{**customer(i), "event_time": t} for i, t in enumerate(times)]
    accepted: dict[str, str] = {}
    for row in rows:
        try:
            store.put_record(g.name, row)
            sdk = True
        except RecordValidationError as exc:
            assert "event time" in str(exc), exc
            sdk = False
        try:
            runtime.put_record(FeatureGroupName=g.name, Record=wire_record(row))
            via_http = True
        except ClientError as exc:
            err = exc.response["Error"]
            assert err["Code"] == "ValidationError" and "event time" in err["Message"], err
            via_http = False
        assert sdk == via_http, f"the SDK and HTTP doors judge {row['event_time'][:60]!r} differently"
        if sdk:
            accepted[row["customer_id"]] = row["event_time"]
    ingested = store.ingest(g.name, rows, progress=False)
    assert ingested.published == len(accepted), "ingest judges event times as put does"
    assert {rows[r.index]["customer_id"] for r in ingested.rejected} == \
        {r["customer_id"] for r in rows} - set(accepted)
    # Every accepted record is applied online (its event time exactly as given) and offline, and
    # nothing is dead-lettered.
    for rid, event_time in accepted.items():
        got = wait_for(lambda rid=rid: store.get_record(g.name, rid), timeout_s=60, what=f"{rid} online")
        assert got["event_time"] == event_time
    topic = store.registry.topic_of(g.name)
    expected = Counter((topic, m.partition(), m.offset()) for m in read_topic(stack, topic))
    assert expected.total() == 3 * len(accepted)
    wait_for(lambda: table_coordinates(store.offline_tables(), g) == expected, timeout_s=90,
             what="every accepted record offline, once")
    assert dead_letters(stack, topic) == []
    assert all(p.alive() for p in pipeline), [p.tail() for p in pipeline]


def test_a_hard_delete_older_than_the_online_record_is_refused_at_the_door(store, stack, http, pipeline,
                                                                          unique_name):
    g = store.create_feature_group(customers_group(unique_name("hard"), partitions=1))
    store.put_record(g.name, customer(1, second=30), wait_online=True, wait_timeout_s=60)
    older = "2031-01-01T00:00:10Z"
    with pytest.raises(RecordValidationError, match="HardDelete at event time 2031-01-01T00:00:10Z is older"):
        store.delete_record(g.name, "c1", older, mode="hard")
    _, runtime = boto_clients(http)
    code, message, status = error_of(runtime.delete_record, FeatureGroupName=g.name,
                                     RecordIdentifierValueAsString="c1", EventTime=older, DeletionMode="HardDelete")
    assert (code, status) == ("ValidationError", 400) and "older than the online record" in message
    # A soft delete that is older is historic (kept offline), as the reference does: accepted.
    runtime.delete_record(FeatureGroupName=g.name, RecordIdentifierValueAsString="c1", EventTime=older)
    # A newer hard delete is accepted and applied.
    runtime.delete_record(FeatureGroupName=g.name, RecordIdentifierValueAsString="c1",
                          EventTime="2031-01-01T00:00:40Z", DeletionMode="HardDelete")
    wait_for(lambda: store.get_record(g.name, "c1") is None, timeout_s=60, what="the hard delete applied")
    assert dead_letters(stack, store.registry.topic_of(g.name)) == []
