"""The faust adapter says by name what an upgrade of faust-streaming or aiokafka broke."""

from __future__ import annotations

import pytest

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


def test_a_partition_revoked_under_the_fetch_loop_keeps_the_last_high_watermark(monkeypatch):
    """aiokafka asserts when asked the high watermark of a partition it no longer holds; faust's fetch
    loop asks it for every record, and the assertion used to crash the worker."""
    from types import SimpleNamespace

    from faust.transport.drivers import aiokafka as faust_aiokafka

    from streams.online.faust_adapter import FastDrainConsumer

    answers = {"t0": 7}

    def highwater(self, tp):
        if tp in answers:
            return answers[tp]
        raise AssertionError("Partition is not assigned" if tp == "gone" else "something else")

    monkeypatch.setattr(faust_aiokafka.Consumer, "highwater", highwater)
    consumer = object.__new__(FastDrainConsumer)
    consumer.app = SimpleNamespace(monitor=SimpleNamespace(tp_end_offsets={"gone": 41}))
    assert consumer.highwater("t0") == 7
    assert consumer.highwater("gone") == 41
    with pytest.raises(AssertionError, match="something else"):
        consumer.highwater("other")
