"""The pure parts of dead-letter redrive: reading a dead letter, --since, markers, the plan, revalidation."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import orjson
import pytest

from schemas.errors import RecordValidationError
from schemas.messages import OFFLINE, ONLINE
from schemas.wire import H_API_TIME, H_SCHEMA_VERSION, decode, encode
from streams.deadletter_records import (
    DeadLetter,
    SinceError,
    SourceRef,
    by_source,
    dead_letter_from,
    parse_since,
    store_of_stage,
)
from streams.redrive_plan import (
    DONE,
    PUBLISHING,
    Marker,
    decode_marker,
    encode_marker,
    encode_redriven,
    fold_markers,
    marker_key,
    parse_marker_key,
    plan,
    redrive_of,
    revalidate,
)
from streams.route import RawMessage
from tests.support.offline import T0, make_group
from tests.support.offline import delete as _delete
from tests.support.offline import put as _put

NOW_MS = 1_790_000_000_000


def put(i: int, **kw):
    """A put whose event_time_ns agrees with its record's event time (as the door makes them)."""
    return _put(i, **{"event_time_ns": T0, **kw})


def delete(i: int):
    return _delete(i, T0)


# ---------------------------------------------------------------- --since
@pytest.mark.parametrize(("text", "back_ms"), [("30s", 30_000), ("30m", 1_800_000), ("1h", 3_600_000),
                                               ("7d", 7 * 86_400_000), ("2w", 14 * 86_400_000), (" 5m ", 300_000)])
def test_since_relative_is_counted_back_from_now(text, back_ms):
    assert parse_since(text, NOW_MS) == NOW_MS - back_ms


def test_since_absolute_forms():
    want = int(datetime(2026, 10, 2, 12, tzinfo=UTC).timestamp() * 1000)
    assert parse_since("2026-10-02T12:00:00Z", NOW_MS) == want
    assert parse_since("2026-10-02T14:00:00+02:00", NOW_MS) == want
    assert parse_since(datetime(2026, 10, 2, 14, tzinfo=timezone(timedelta(hours=2))), NOW_MS) == want
    assert parse_since(want, NOW_MS) == want


@pytest.mark.parametrize("bad", ["yesterday", "1y", "5", "-1h", "2026-10-02T12:00:00", datetime(2026, 1, 1), True])
def test_since_refuses_what_it_cannot_read_and_says_what_is_valid(bad):
    with pytest.raises(SinceError) as err:
        parse_since(bad, NOW_MS)
    assert "since" in str(err.value)


# ---------------------------------------------------------------- reading a dead letter
def _dead(partition: int, offset: int, stage: str, *, source=("fs.customers", 2, 41), value=b"v",
          key=b"c1", ts=1000, extra=()) -> RawMessage:
    headers = [("fs-format", b"json/1"), (H_API_TIME, b"77"), *extra, ("fs-dlq-reason", b"unknown feature group"),
               ("fs-dlq-source-topic", source[0].encode()), ("fs-dlq-source-partition", str(source[1]).encode()),
               ("fs-dlq-source-offset", str(source[2]).encode()), ("fs-dlq-stage", stage.encode())]
    return RawMessage("fs._deadletter", partition, offset, key, value, headers, ts)


def test_a_dead_letter_names_its_source_stage_reason_and_keeps_the_original_headers():
    dl = dead_letter_from(_dead(0, 5, "offline"), "fs")
    assert dl.source == SourceRef("fs.customers", 2, 41)
    assert (dl.group, dl.stage, dl.reason, dl.store) == ("customers", "offline", "unknown feature group", OFFLINE)
    assert dl.headers == (("fs-format", b"json/1"), (H_API_TIME, b"77"))
    assert (dl.key, dl.value, dl.timestamp_ms) == (b"c1", b"v", 1000)
    assert dl.to_dict()["time"] == "1970-01-01T00:00:01.000Z"


def test_a_dead_letter_without_source_headers_or_of_a_foreign_topic():
    raw = RawMessage("fs._deadletter", 0, 1, b"k", b"v", [("fs-dlq-reason", b"x"), ("fs-dlq-stage", b"online")])
    dl = dead_letter_from(raw, "fs")
    assert dl.source is None and dl.group is None and dl.store == ONLINE
    assert dead_letter_from(_dead(0, 1, "online", source=("other.customers", 0, 1)), "fs").group is None


def test_stages_map_to_stores():
    assert [store_of_stage(s) for s in ("online", "replay-online", "rebuild-online", "offline", "replay-offline",
                                        "", "mystery")] == [ONLINE, ONLINE, ONLINE, OFFLINE, OFFLINE, None, None]


# ---------------------------------------------------------------- markers
def test_marker_round_trip_and_key():
    m = Marker(PUBLISHING, "fs.customers", {0: 12, 2: 7}, None, 55)
    assert decode_marker(encode_marker(m)) == m
    d = Marker(DONE, "fs.customers", {}, (1, 99), 56)
    assert decode_marker(encode_marker(d)) == d
    src = SourceRef("fs.customers", 2, 41)
    assert parse_marker_key(marker_key(src, ONLINE)) == (src, ONLINE)
    assert parse_marker_key(b"fs.customers/2/41|Elsewhere") is None
    assert parse_marker_key(b"garbage") is None


def test_fold_keeps_the_latest_marker_per_key_and_drops_tombstones_and_garbage():
    a, b = SourceRef("fs.g", 0, 1), SourceRef("fs.g", 0, 2)
    pub = encode_marker(Marker(PUBLISHING, "fs.g", {0: 3}))
    done = encode_marker(Marker(DONE, "fs.g", redriven_to=(0, 3)))
    folded = fold_markers([(marker_key(a, ONLINE), pub), (marker_key(a, ONLINE), done),
                           (marker_key(b, ONLINE), pub), (marker_key(b, ONLINE), None),
                           (marker_key(b, OFFLINE), b"{not json"), (None, done)])
    assert folded == {(a, ONLINE): Marker(DONE, "fs.g", redriven_to=(0, 3))}


# ---------------------------------------------------------------- the plan
def test_one_source_record_parked_by_both_stages_is_one_plan_for_both_stores():
    dls = [dead_letter_from(_dead(0, 1, "online"), "fs"), dead_letter_from(_dead(0, 2, "offline"), "fs"),
           dead_letter_from(_dead(0, 3, "online", source=("fs.customers", 0, 9)), "fs")]
    plans, unusable = plan(dls, {})
    assert not unusable
    assert [(p.source.offset, sorted(p.pending), len(p.dead_letters)) for p in plans] == \
        [(41, [OFFLINE, ONLINE], 2), (9, [ONLINE], 1)]
    assert set(by_source(dls)) == {SourceRef("fs.customers", 2, 41), SourceRef("fs.customers", 0, 9)}


def test_a_store_redriven_before_is_not_pending_and_a_half_done_one_is_in_doubt():
    src = SourceRef("fs.customers", 2, 41)
    dls = [dead_letter_from(_dead(0, 1, "online"), "fs"), dead_letter_from(_dead(0, 2, "offline"), "fs")]
    markers = {(src, ONLINE): Marker(DONE, "fs.customers", redriven_to=(2, 50)),
               (src, OFFLINE): Marker(PUBLISHING, "fs.customers", {2: 50})}
    [p], _ = plan(dls, markers)
    assert p.pending == {OFFLINE} and set(p.done) == {ONLINE} and set(p.in_doubt) == {OFFLINE}
    markers[(src, OFFLINE)] = Marker(DONE, "fs.customers", redriven_to=(2, 50))
    [p], _ = plan(dls, markers)
    assert p.pending == frozenset(), "redriven for both stores: nothing left, however often it runs"


def test_dead_letters_without_a_source_or_a_known_stage_cannot_be_planned():
    raw = RawMessage("fs._deadletter", 0, 1, b"k", b"v", [("fs-dlq-stage", b"online")])
    odd = dead_letter_from(_dead(0, 2, "mystery"), "fs")
    plans, unusable = plan([dead_letter_from(raw, "fs"), odd], {})
    assert plans == [] and len(unusable) == 2


# ---------------------------------------------------------------- revalidation
def test_revalidate_keeps_identity_and_stamps_the_current_version():
    g = replace(make_group(), version=3)
    original = replace(put(5), schema_version=1, api_invocation_time_ns=123)
    key, value, headers = encode(original)
    msg = decode(key, value, headers)
    out = revalidate(g, msg, frozenset({ONLINE, OFFLINE}))
    assert (out.id, out.event_time_ns, out.record, out.api_invocation_time_ns, out.schema_version) == \
        (original.id, original.event_time_ns, original.record, 123, 3)
    assert out.target_stores == {ONLINE, OFFLINE}
    # Only the stores that parked it: the other one applied (or will apply) the original.
    assert revalidate(g, msg, frozenset({ONLINE})).target_stores == {ONLINE}


def test_revalidate_targets_only_stores_the_record_wants_and_the_group_enables():
    g = make_group(offline_enabled=False)
    msg = decode(*encode(put(1)))
    assert revalidate(g, msg, frozenset({OFFLINE})) is None
    assert revalidate(g, msg, frozenset({ONLINE, OFFLINE})).target_stores == {ONLINE}
    online_only = decode(*encode(put(1, stores=frozenset({ONLINE}))))
    assert revalidate(make_group(), online_only, frozenset({OFFLINE})) is None


def test_revalidate_refuses_what_the_door_refuses():
    g = make_group()
    bad = decode(b"c-1", orjson.dumps({"op": "put", "id": "c-1", "event_time_ns": 1,
                                        "record": {"customer_id": "c-1", "event_time": "2023-11-14T22:13:20Z",
                                                   "age": "old"}}), [])
    with pytest.raises(RecordValidationError, match="age"):
        revalidate(g, bad, frozenset({ONLINE}))
    lying = decode(*encode(put(1, event_time_ns=T0 + 5)))  # event_time_ns disagrees with the record's event time
    with pytest.raises(RecordValidationError, match="event_time_ns"):
        revalidate(g, lying, frozenset({ONLINE}))


def test_revalidate_a_delete():
    g = replace(make_group(), version=2)
    d = delete(3)
    out = revalidate(g, decode(*encode(d)), frozenset({ONLINE, OFFLINE}))
    assert (out.op, out.id, out.event_time_ns, out.mode, out.schema_version) == ("delete", d.id, d.event_time_ns,
                                                                                 d.mode, 2)


def test_a_redriven_record_names_its_source_and_is_otherwise_the_doors_encoding():
    src = SourceRef("fs.customers", 2, 41)
    msg = put(2)
    key, value, headers = encode_redriven(msg, src)
    assert (key, value) == encode(msg)[:2]
    assert dict(headers)[H_SCHEMA_VERSION] == str(msg.schema_version).encode()
    assert redrive_of(headers) == src
    assert redrive_of(encode(msg)[2]) is None


def test_dead_letter_type_is_hashable_for_grouping():
    dl = dead_letter_from(_dead(0, 1, "online"), "fs")
    assert isinstance(dl, DeadLetter) and {dl: 1}[dl] == 1
