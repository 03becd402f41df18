"""ExpiresAt = EventTime + TTL, record TTL over group TTL; ms rounding for PEXPIREAT."""

import pytest

from sinks.online.expiry import expires_at_ns, is_expired, ns_to_expire_ms

ET = 1_633_176_000_123_456_789


def test_no_ttl_means_no_expiry():
    assert expires_at_ns(ET, None, None) is None
    assert not is_expired(None, 2**62)


def test_group_ttl_applies_when_record_has_none():
    assert expires_at_ns(ET, None, 60) == ET + 60 * 10**9


def test_record_ttl_overrides_group_ttl_both_ways():
    assert expires_at_ns(ET, 5, 3600) == ET + 5 * 10**9
    assert expires_at_ns(ET, 3600, 5) == ET + 3600 * 10**9


def test_exact_for_19_digit_times():
    # a float would round this; the arithmetic must stay in ints
    et = 9_223_372_036_000_000_001
    assert expires_at_ns(et, 1, None) == 9_223_372_037_000_000_001


@pytest.mark.parametrize("bad", [0, -1, 1.5, "60", True])
def test_bad_ttl_is_refused(bad):
    with pytest.raises(ValueError, match="positive whole number of seconds"):
        expires_at_ns(ET, bad, None)


def test_expired_at_the_exact_instant_and_after():
    assert is_expired(100, 100)
    assert is_expired(100, 101)
    assert not is_expired(100, 99)


def test_ms_rounds_up_never_down():
    assert ns_to_expire_ms(1_000_000) == 1
    assert ns_to_expire_ms(1_000_001) == 2
    assert ns_to_expire_ms(ET) == 1_633_176_000_124
