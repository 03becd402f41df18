"""The offline sink's wiring without servers: routing into the writer (a local Iceberg table),
poison, where a partition resumes, and the CLI's flag checks."""

from __future__ import annotations

import argparse
from collections import Counter

import orjson
import pytest

from featurestream.cli import CliError, build_parser
from featurestream.cli.sink_cmds import settings_from_args
from schemas.messages import ONLINE
from schemas.wire import encode
from sinks.offline.catalog import OfflineTables
from sinks.offline.writer import OfflineWriter
from streams.group_view import GroupView
from streams.offline.applier import BEGINNING, OfflineApplier
from streams.route import RawMessage
from tests.support.offline import T0, delete, make_group, put, table_coordinates

PREFIX = "fs"
TOPIC = f"{PREFIX}.customers"


def raw(offset: int, msg=None, *, topic: str = TOPIC, partition: int = 0, value: bytes | None = None) -> RawMessage:
    if value is not None:
        return RawMessage(topic, partition, offset, b"k", value, [("fs-format", b"json/1")])
    key, val, headers = encode(msg or put(offset, T0))
    return RawMessage(topic, partition, offset, key, val, headers)


@pytest.fixture
def tables(tmp_path):
    return OfflineTables.open(f"sqlite:///{tmp_path / 'catalog.db'}", PREFIX)


@pytest.fixture
def G(tmp_path):
    return make_group("customers", offline_uri=str(tmp_path / "offline" / "customers-1700000000"))


@pytest.fixture
def applier(tables, G):
    return OfflineApplier(GroupView(lambda: {"customers": G}), OfflineWriter(tables), None, PREFIX)


def test_rows_go_to_the_writer_and_poison_is_counted(applier, tables, G) -> None:
    bad_schema = orjson.dumps({"op": "put", "id": "c9", "event_time_ns": 1, "record": {"customer_id": "c9",
                                                                                          "age": "old"}})
    batch = [raw(0), raw(1, delete(1, T0)), raw(2, value=b"\xff garbage"), raw(3, value=bad_schema),
             raw(4, value=b"{}", topic=f"{PREFIX}.ghost"), raw(5, value=b'{"op": "put"}'), raw(6)]
    applier.add(batch)
    assert applier.poison_count == 4
    assert applier.holds(TOPIC, 0) and not applier.holds(f"{PREFIX}.ghost", 0)
    result = applier.flush(TOPIC, 0)
    assert result.rows == 3 and result.next_offset == 7 and not applier.holds(TOPIC, 0)
    assert table_coordinates(tables, G) == Counter((TOPIC, 0, o) for o in (0, 1, 6))


def test_offline_disabled_and_online_only_records_are_skipped(tables, G) -> None:
    off = make_group("customers", offline_enabled=False)
    a = OfflineApplier(GroupView(lambda: {"customers": off}), OfflineWriter(tables), None, PREFIX)
    online = frozenset({ONLINE})
    a.add([raw(0, put(0, T0, stores=online)), raw(1, put(1, T0, stores=online))])
    assert not a.holds(TOPIC, 0) and a.poison_count == 0
    b = OfflineApplier(GroupView(lambda: {"customers": G}), OfflineWriter(tables), None, PREFIX)
    b.add([raw(0, put(0, T0, stores=online))])  # offline on, but this record targets only online
    assert not b.holds(TOPIC, 0) and b.poison_count == 0


def test_unknown_group_forces_one_registry_refresh(tables, G) -> None:
    answers = iter([{}, {"customers": G}])  # the view's first load, then the forced one
    calls = []

    def load():
        calls.append(1)
        return next(answers)

    a = OfflineApplier(GroupView(load), OfflineWriter(tables), None, PREFIX)
    a.add([raw(0)])
    assert len(calls) == 2 and a.holds(TOPIC, 0) and a.poison_count == 0


def test_resume_is_the_tables_offset_beginning_or_the_groups(applier, tables) -> None:
    assert applier.resume(TOPIC, 0) == BEGINNING  # an offline group whose table holds nothing yet
    applier.add([raw(o, partition=p) for p in (0, 2) for o in range(3)])
    applier.flush(TOPIC, 0)
    assert applier.resume(TOPIC, 0) == 3 and applier.resume(TOPIC, 2) == BEGINNING  # 2 was never flushed
    off = make_group("web", offline_enabled=False)
    a = OfflineApplier(GroupView(lambda: {"web": off}), OfflineWriter(tables), None, PREFIX)
    assert a.resume(f"{PREFIX}.web", 0) is None  # no offline table: the consumer group's offset
    assert a.resume(f"{PREFIX}.ghost", 0) is None


@pytest.mark.parametrize("flags, message", [
    (["--max-records", "0"], "--max-records"),
    (["--max-bytes", "-5"], "--max-bytes"),
    (["--max-age-s", "nan"], "--max-age-s"),
    (["--max-age-s", "inf"], "--max-age-s"),
    (["--compact-every-s", "-1"], "--compact-every-s"),
    (["--maintain-every-s", "nan"], "--maintain-every-s"),
    (["--retention", "soon"], "--retention"),
    (["--retention=-1d"], "--retention"),
    (["--kill-stage", "sometime"], "--kill-stage"),
    (["--target-file-mb", "0"], "--target-file-mb"),
    (["--target-file-mb", "1e12"], "--target-file-mb"),
])
def test_bad_flags_are_usage_errors_naming_the_flag(flags, message) -> None:
    args = build_parser().parse_args(["sink", *flags])
    with pytest.raises(CliError, match=message) as info:
        settings_from_args(args)
    assert info.value.status == 2


def test_non_numeric_flag_is_rejected_by_argparse(capsys) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["sink", "--max-records", "many"])
    assert "--max-records" in capsys.readouterr().err


def test_defaults_make_rows_queryable_within_a_minute() -> None:
    s = settings_from_args(build_parser().parse_args(["sink"]))
    # 50 s of buffering plus the upload and commit keeps publish-to-queryable p99 under 60 s.
    assert s.policy.max_age_s == 50 and s.target_bytes == 128 * 1024 * 1024
    assert s.retention_s == 7 * 86400
    assert settings_from_args(build_parser().parse_args(["sink", "--retention", "12h"])).retention_s == 43200
    assert isinstance(build_parser().parse_args(["sink"]), argparse.Namespace)
