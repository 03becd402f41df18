"""`export` lines printed by `featurestream up`, and their round trip through a real shell."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from featurestream.config import Config
from featurestream.stack.exports import export_line, format_exports, parse_exports
from featurestream.stack.launcher import Endpoints


def test_plain_value() -> None:
    assert export_line("FEATURESTREAM_REDIS_URL", "redis://127.0.0.1:16379/0") == \
        "export FEATURESTREAM_REDIS_URL=redis://127.0.0.1:16379/0"


def test_values_with_shell_characters_survive_eval() -> None:
    nasty = {"A": "it's $HOME `x` \"q\" ;rm -rf /", "B": "", "C": "s3://b/p?x=1&y=2"}
    text = format_exports(nasty)
    assert text.count("\n") == 3 and all(line.startswith("export ") for line in text.splitlines())
    assert parse_exports(text) == nasty
    sh = shutil.which("sh")
    if sh is None:
        pytest.skip("no POSIX shell to eval with")
    out = subprocess.run([sh, "-c", text + 'printf "%s|%s|%s" "$A" "$B" "$C"'], capture_output=True,
                         text=True, check=True, env={})
    assert out.stdout == "|".join(nasty.values())


@pytest.mark.parametrize("name", ["", "1ABC", "A-B", "A B", "A=B", None, 3])
def test_bad_names(name: object) -> None:
    with pytest.raises(ValueError, match="shell variable name"):
        export_line(name, "v")  # type: ignore[arg-type]


@pytest.mark.parametrize("value, error", [(None, TypeError), (42, TypeError), (float("nan"), TypeError),
                                          ("a\nexport X=1", ValueError), ("a\0b", ValueError)])
def test_bad_values(value: object, error: type[Exception]) -> None:
    with pytest.raises(error, match="NAME"):
        export_line("NAME", value)  # type: ignore[arg-type]


def test_parse_rejects_garbage() -> None:
    with pytest.raises(ValueError, match="not an export line"):
        parse_exports("echo hi\n")


def test_endpoints_export_every_variable_in_order_and_fill_a_config() -> None:
    ep = Endpoints("127.0.0.1:1", "redis://127.0.0.1:2/0", "http://127.0.0.1:3", "k", "s", "s3://b/o")
    assert list(ep.exports()) == [
        "FEATURESTREAM_KAFKA_BOOTSTRAP", "FEATURESTREAM_REDIS_URL", "FEATURESTREAM_S3_ENDPOINT_URL",
        "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "FEATURESTREAM_OFFLINE_URI",
    ]
    cfg = ep.apply(Config(topic_prefix="t"))
    assert (cfg.kafka_bootstrap, cfg.redis_url, cfg.s3_endpoint_url, cfg.offline_uri, cfg.topic_prefix) == \
        ("127.0.0.1:1", "redis://127.0.0.1:2/0", "http://127.0.0.1:3", "s3://b/o", "t")
    # An external S3 without known credentials: those lines are left out, not printed empty.
    assert "AWS_ACCESS_KEY_ID" not in Endpoints("a", "b", "http://s3", None, None, "s3://b/o").exports()
