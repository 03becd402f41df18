"""The faust adapter says by name what an upgrade of faust-streaming or aiokafka broke."""

from __future__ import annotations

from streams.online import faust_adapter


def test_installed_faust_and_aiokafka_have_what_the_adapter_relies_on():
    problems = faust_adapter.check_compat()
    assert not problems, "\n".join(problems)


def test_a_changed_faust_loop_is_named(monkeypatch):
    monkeypatch.setattr(faust_adapter, "MIRRORED_DRAIN_SHA256", "0" * 16)
    problems = faust_adapter.check_compat()
    assert len(problems) == 1 and "_drain_messages changed" in problems[0]
    assert "MIRRORED_DRAIN_SHA256" in problems[0]


def test_a_missing_attribute_is_named(monkeypatch):
    monkeypatch.setattr(faust_adapter, "CONSUMER_ATTRS", (*faust_adapter.CONSUMER_ATTRS, "_no_such_thing"))
    assert any("'_no_such_thing'" in p for p in faust_adapter.check_compat())
