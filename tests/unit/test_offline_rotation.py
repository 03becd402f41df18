"""RotationPolicy and the pure rotation decision."""

from __future__ import annotations

import math

import pytest

from sinks.offline.errors import OfflineLayoutError
from sinks.offline.rotation import RotationPolicy, rotation_reason

P = RotationPolicy(max_records=100, max_bytes=1000, max_age_s=60.0)


def test_default_policy_makes_rows_queryable_within_a_minute() -> None:
    assert RotationPolicy().max_age_s <= 60


@pytest.mark.parametrize(("records", "nbytes", "age", "reason"), [
    (0, 0, 1000.0, None),          # empty buffer never rotates, however old the clock
    (1, 10, 0.0, None),
    (99, 999, 59.9, None),
    (100, 0, 0.0, "records"),
    (5, 1000, 0.0, "bytes"),
    (5, 10, 60.0, "age"),
    (100, 1000, 60.0, "records"),  # several limits: records is reported first
])
def test_rotation_reason(records: int, nbytes: int, age: float, reason: str | None) -> None:
    assert rotation_reason(P, records, nbytes, 1000.0 if records else None, 1000.0 + age) == reason


def test_no_first_added_time_means_empty() -> None:
    assert rotation_reason(P, 5, 5000, None, 1e9) is None


@pytest.mark.parametrize("kwargs", [
    {"max_records": 0}, {"max_records": -5}, {"max_records": 1.5}, {"max_records": "10"},
    {"max_bytes": 0}, {"max_bytes": None}, {"max_age_s": 0}, {"max_age_s": -1.0},
    {"max_age_s": math.nan}, {"max_age_s": math.inf}, {"max_age_s": True}, {"max_age_s": "60"},
])
def test_bad_policies_are_refused_naming_the_field(kwargs: dict) -> None:
    with pytest.raises(OfflineLayoutError, match=next(iter(kwargs))):
        RotationPolicy(**kwargs)
