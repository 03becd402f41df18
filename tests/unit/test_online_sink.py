"""The default engine's OnlineSink (streams/online/engine.py): one batch in flight on its Redis
thread, and the consume loop never commits an offset past a record Redis has not confirmed; a
failed batch rewinds. A fake applier stands in for Redis (its execute blocks until released)."""

from __future__ import annotations

import threading
from typing import Any

from confluent_kafka import TopicPartition

from schemas.errors import ServiceUnavailableError
from streams.consume_loop import ConsumeLoop, subscription_pattern
from streams.online.applier import ApplySummary
from streams.online.engine import OnlineSink
from streams.route import RawMessage
from tests.unit.test_consume_loop import FakeConsumer, Msg

T = "fs.g"


class FakeApplier:
    def __init__(self) -> None:
        self.release = threading.Event()
        self.executing = threading.Event()
        self.applied: list[int] = []  # last offset of every batch Redis confirmed
        self.fail_next = False

    def prepare(self, batch: list[Any]) -> list[int]:
        return [r.offset for r in batch]

    def execute(self, prepared: list[int]) -> ApplySummary:
        self.executing.set()
        assert self.release.wait(10)
        if self.fail_next:
            self.fail_next = False
            raise ServiceUnavailableError("Redis did not answer")
        self.applied.append(prepared[-1])
        return ApplySummary()


def _loop() -> tuple[ConsumeLoop, FakeConsumer, FakeApplier, OnlineSink]:
    consumer, applier = FakeConsumer(), FakeApplier()
    sink = OnlineSink(applier)  # type: ignore[arg-type]
    loop = ConsumeLoop(consumer, sink, subscription_pattern("fs"), role="online processor", idle_commit_s=0.0,
                       backoff_max_s=0.0)
    loop.start()
    consumer.callbacks["assign"](consumer, [TopicPartition(T, 0)])
    return loop, consumer, applier, sink


def test_a_batch_in_flight_is_never_committed_and_the_next_is_decoded_meanwhile() -> None:
    loop, consumer, applier, sink = _loop()
    consumer.batches = [[Msg(T, 0, 0), Msg(T, 0, 1)]]
    flusher = threading.Thread(target=loop.step)  # add hands batch 1 over; the idle commit waits for it
    flusher.start()
    assert applier.executing.wait(5)
    flusher.join(0.2)
    assert flusher.is_alive() and consumer.commits == []  # Redis has not confirmed: nothing committed
    applier.release.set()
    flusher.join(5)
    assert consumer.commits == [[(T, 0, 2)]] and applier.applied == [1]
    sink.close()


def test_a_failed_batch_rewinds_to_the_committed_offset_and_nothing_past_it_is_committed() -> None:
    loop, consumer, applier, sink = _loop()
    applier.release.set()
    consumer.batches = [[Msg(T, 0, 0)]]
    loop.step()
    assert consumer.commits == [[(T, 0, 1)]]
    applier.fail_next = True
    consumer.batches = [[Msg(T, 0, 1), Msg(T, 0, 2)]]
    loop.step()  # batch 2 fails on the Redis thread: the flush raises, the loop rewinds
    assert consumer.commits == [[(T, 0, 1)]]
    assert consumer.seeks[-1] == (T, 0, 1)
    assert applier.applied == [0]
    sink.close()


def test_a_failure_seen_while_revoking_is_raised_at_the_next_call() -> None:
    """A revoke waits for the batch in flight; if it failed, the partitions we keep must not be
    committed past it: the failure waits for the next add or flush."""
    _, _, applier, sink = _loop()
    applier.fail_next = True
    sink.add([RawMessage(T, 0, 1, b"k", b"{}", [], 0)])
    applier.release.set()
    sink.discard(T, 1)
    try:
        sink.flush_many([(T, 0)])
    except ServiceUnavailableError:
        pass
    else:
        raise AssertionError("the failure of the batch in flight was lost")
    sink.close()
