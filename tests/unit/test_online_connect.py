"""Redis URL forms: plain, TLS, AUTH, cluster; passwords never shown."""

import pytest

from sinks.online.connect import parse_redis_url, redact_url
from sinks.online.errors import RedisUrlError


def test_plain_url_is_not_a_cluster():
    t = parse_redis_url("redis://127.0.0.1:6379/0")
    assert (t.url, t.cluster) == ("redis://127.0.0.1:6379/0", False)


def test_tls_url_kept():
    t = parse_redis_url("rediss://user:pw@cache.example:6380/2")
    assert t.url == "rediss://user:pw@cache.example:6380/2" and not t.cluster


@pytest.mark.parametrize("url,plain", [
    ("redis+cluster://127.0.0.1:7000", "redis://127.0.0.1:7000"),
    ("rediss+cluster://u:p@h:7000", "rediss://u:p@h:7000"),
    ("redis://127.0.0.1:7000?cluster=true", "redis://127.0.0.1:7000"),
    ("redis://127.0.0.1:7000?cluster=1&health_check_interval=5", "redis://127.0.0.1:7000?health_check_interval=5"),
])
def test_cluster_forms(url, plain):
    t = parse_redis_url(url)
    assert t.cluster and t.url == plain


def test_cluster_false_is_single_server():
    assert not parse_redis_url("redis://h:1?cluster=false").cluster


@pytest.mark.parametrize("url,why", [
    ("", "non-empty string"),
    (None, "non-empty string"),
    (6379, "non-empty string"),
    ("http://127.0.0.1:6379", "scheme 'http'"),
    ("127.0.0.1:6379", "scheme"),
    ("redis://", "no host"),
    ("redis://127.0.0.1:notaport", "invalid Redis URL"),
])
def test_bad_urls_are_explained(url, why):
    with pytest.raises(RedisUrlError, match=why):
        parse_redis_url(url)


def test_password_is_redacted_everywhere():
    assert redact_url("redis://alice:s3cret@h:6379/0") == "redis://alice:***@h:6379/0"
    assert redact_url("redis://h:6379") == "redis://h:6379"
    with pytest.raises(RedisUrlError) as info:
        parse_redis_url("http://alice:s3cret@h:6379")
    assert "s3cret" not in str(info.value)
