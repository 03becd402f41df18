"""The faust adapter says by name what an upgrade of faust-streaming or aiokafka broke."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

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


def test_every_revocation_stops_the_flow_before_faust_handles_it(monkeypatch):
    """A subscription change (a group created or deleted) empties aiokafka's assignment before the
    rebalance revokes the old partitions, and faust's app stops the flow only when it sees an
    assignment: records fetched meanwhile went into the agent's queue, which the resume cleared."""
    from faust.transport.drivers import aiokafka as faust_aiokafka

    from streams.online.faust_adapter import FastDrainConsumer

    calls: list[str] = []

    async def faust_revoked(self, revoked):
        calls.append(f"faust:{sorted(revoked)}")

    class FlowControl:
        def suspend(self):
            calls.append("suspend")

        def clear(self):
            calls.append("clear")

    monkeypatch.setattr(faust_aiokafka.Consumer, "on_partitions_revoked", faust_revoked)
    monkeypatch.setattr(faust_aiokafka.Consumer, "stop_flow", lambda self: calls.append("stop_flow"))
    consumer = object.__new__(FastDrainConsumer)
    consumer.app = SimpleNamespace(flow_control=FlowControl())
    asyncio.run(consumer.on_partitions_revoked({"t:0"}))
    assert calls == ["stop_flow", "suspend", "clear", "faust:['t:0']"]


@pytest.mark.parametrize("reset, sought", [("earliest", ["new", "zero"]), ("latest", [])])
def test_partitions_without_a_committed_offset_are_sought_to_their_beginning(monkeypatch, reset, sought):
    """aiokafka's seek_to_committed leaves a partition with no committed offset where its fetcher is,
    so records fetched and dropped in a rebalance were never read again."""
    from faust.transport.drivers import aiokafka as faust_aiokafka

    from streams.online.faust_adapter import FastDrainConsumer

    committed = {"new": None, "zero": 0, "old": 17}
    seeks: list[list[str]] = []

    async def faust_seek_to_committed(self):
        return committed

    class Thread:
        async def seek_fetched_to_beginning(self, tps):
            seeks.append(list(tps))

    monkeypatch.setattr(faust_aiokafka.Consumer, "seek_to_committed", faust_seek_to_committed)
    consumer = object.__new__(FastDrainConsumer)
    consumer.app = SimpleNamespace(conf=SimpleNamespace(consumer_auto_offset_reset=reset))
    consumer._thread = Thread()
    assert asyncio.run(consumer.seek_to_committed()) == committed
    assert seeks == ([sought] if sought else [])


def test_a_seek_to_the_beginning_that_a_newer_rebalance_overtook_is_left_to_that_rebalance(monkeypatch):
    from aiokafka.errors import IllegalStateError
    from faust.transport.drivers import aiokafka as faust_aiokafka

    from streams.online.faust_adapter import FastDrainConsumer

    async def faust_seek_to_committed(self):
        return {"gone": None}

    class Thread:
        async def seek_fetched_to_beginning(self, tps):
            raise IllegalStateError(f"Partitions {set(tps)} are not assigned")

    monkeypatch.setattr(faust_aiokafka.Consumer, "seek_to_committed", faust_seek_to_committed)
    consumer = object.__new__(FastDrainConsumer)
    consumer.app = SimpleNamespace(conf=SimpleNamespace(consumer_auto_offset_reset="earliest"))
    consumer._thread = Thread()
    assert asyncio.run(consumer.seek_to_committed()) == {"gone": None}


@pytest.mark.parametrize("assigned, committed", [(set(), False), ({"t:0"}, True)])
def test_a_commit_while_nothing_is_assigned_is_skipped_not_a_crash(monkeypatch, assigned, committed):
    """Between subscribe() and the new assignment aiokafka refuses every commit ("No partitions
    assigned"), and faust crashed the worker on it."""
    from faust.transport.drivers import aiokafka as faust_aiokafka

    from streams.online.faust_adapter import SafeCommitConsumerThread

    sent: list[dict] = []

    async def faust_commit(self, offsets):
        sent.append(offsets)
        return True

    monkeypatch.setattr(faust_aiokafka.AIOKafkaConsumerThread, "_commit", faust_commit)
    thread = object.__new__(SafeCommitConsumerThread)
    monkeypatch.setattr(thread, "_ensure_consumer", lambda: SimpleNamespace(assignment=lambda: assigned))
    assert asyncio.run(thread._commit({"t:0": 5})) is committed
    assert sent == ([{"t:0": 5}] if committed else [])


def test_only_partitions_the_fetcher_moved_are_sought_to_their_beginning(monkeypatch):
    """A partition still awaiting its first position starts at the beginning anyway; seeking every idle
    group's partitions at each rebalance would only send them all to ListOffsets."""
    from streams.online.faust_adapter import SafeCommitConsumerThread

    states = {"moved": SimpleNamespace(has_valid_position=True, position=12),
              "at-zero": SimpleNamespace(has_valid_position=True, position=0),
              "awaiting": SimpleNamespace(has_valid_position=False, position=None)}
    sought: list[tuple] = []

    async def seek_to_beginning(*tps):
        sought.append(tps)

    assignment = SimpleNamespace(state_value=states.get)
    consumer = SimpleNamespace(_subscription=SimpleNamespace(subscription=SimpleNamespace(assignment=assignment)),
                               seek_to_beginning=seek_to_beginning)
    thread = object.__new__(SafeCommitConsumerThread)
    monkeypatch.setattr(thread, "_ensure_consumer", lambda: consumer)
    asyncio.run(thread._seek_fetched_to_beginning(["moved", "at-zero", "awaiting", "revoked"]))
    assert sought == [("moved",)]


def test_the_livelock_check_skips_a_partition_awaiting_its_position(monkeypatch):
    """faust's livelock check reads every assigned partition's position, and aiokafka asserts on one it
    has not reset yet: the check, a diagnostic, crashed the worker."""
    from faust.transport.drivers import aiokafka as faust_aiokafka

    from streams.online.faust_adapter import SafeCommitConsumerThread

    def faust_verify(self, now, tp):
        if tp == "awaiting":
            raise AssertionError
        raise RuntimeError("a real fault")

    monkeypatch.setattr(faust_aiokafka.AIOKafkaConsumerThread, "verify_event_path", faust_verify)
    thread = object.__new__(SafeCommitConsumerThread)
    thread.verify_event_path(0.0, "awaiting")
    with pytest.raises(RuntimeError, match="a real fault"):
        thread.verify_event_path(0.0, "other")


def test_a_missing_piece_of_aiokafka_is_named(monkeypatch):
    from aiokafka.consumer.subscription_state import TopicPartitionState

    monkeypatch.delattr(TopicPartitionState, "has_valid_position")
    problems = faust_adapter.check_compat()
    assert len(problems) == 1 and "TopicPartitionState has no 'has_valid_position'" in problems[0], problems


def test_subscription_drift_names_what_faust_dropped_and_ignores_its_own_topics():
    ours = lambda t: t.startswith("p.")  # noqa: E731 - the processor's topic pattern, in small
    wanted = {"p._registry", "p.a", "p.b"}
    assert faust_adapter.subscription_drift(wanted, None, ours) == ([], [])  # not started: nothing to compare
    assert faust_adapter.subscription_drift(wanted, frozenset({"p._registry", "p.a", "p.b", "p-online-__assignor"}),
                                            ours) == ([], [])
    # A group created during a rebalance (never subscribed), and one deleted then (still subscribed).
    assert faust_adapter.subscription_drift(wanted, frozenset({"p._registry", "p.a", "p.gone", "p-online-x"}),
                                            ours) == (["p.b"], ["p.gone"])


def test_subscribed_topics_reads_aiokafkas_subscription_and_is_none_before_the_consumer_starts():
    class Started:
        def subscription(self):
            return {"p.a", "p._registry"}

    class Thread:
        def __init__(self, consumer):
            self.consumer = consumer

        def _ensure_consumer(self):
            if self.consumer is None:
                raise AssertionError("consumer not started")  # what faust raises before start
            return self.consumer

    def app(thread):
        return SimpleNamespace(consumer=SimpleNamespace(_thread=thread))

    assert faust_adapter.subscribed_topics(app(Thread(Started()))) == frozenset({"p.a", "p._registry"})
    assert faust_adapter.subscribed_topics(app(Thread(None))) is None
    assert faust_adapter.subscribed_topics(app(None)) is None
