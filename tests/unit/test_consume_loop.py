"""The consume-and-commit loop (streams/consume_loop.py) against an in-memory consumer.

No Kafka here: the fake stands in for confluent_kafka.Consumer's few calls the loop makes, and
the fake sink for the table (its recorded offsets), so the rules (resume where the table says,
commit the group only after the table, rewinds) are checked exactly. The real consumer is
exercised in tests/integration/test_sink.py.
"""

from __future__ import annotations

import re

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from streams.consume_loop import ConsumeLoop, chunk_bounds, consumer_config, subscription_pattern
from streams.route import RawMessage

T = "fs.customers"


class Msg:
    def __init__(self, topic: str, partition: int, offset: int, value: bytes = b"{}", err: object = None):
        self._t, self._p, self._o, self._v, self._e = topic, partition, offset, value, err

    def error(self): return self._e
    def topic(self): return self._t
    def partition(self): return self._p
    def offset(self): return self._o
    def key(self): return b"k"
    def value(self): return self._v
    def headers(self): return []
    def timestamp(self): return (1, 0)


class FakeConsumer:
    def __init__(self) -> None:
        self.batches: list[list[Msg]] = []
        self.commits: list[list[tuple[str, int, int]]] = []
        self.broker_committed: dict[tuple[str, int], int] = {}
        self.seeks: list[tuple[str, int, int]] = []
        self.fail_commit = False
        self.fail_seek = False
        self.unsubscribed = False
        self.callbacks: dict = {}
        self.cluster_topics = {T: None, "fs._registry": None}
        self.assigned: list[tuple[str, int, int]] = []
        self.paused: set[tuple[str, int]] = set()

    def subscribe(self, topics, on_assign=None, on_revoke=None, on_lost=None):
        self.callbacks = {"assign": on_assign, "revoke": on_revoke}

    def consume(self, num_messages: int, timeout: float):
        return self.batches.pop(0) if self.batches else []

    def commit(self, offsets, asynchronous):
        assert asynchronous is False
        if self.fail_commit:
            raise KafkaException(KafkaError(KafkaError.REBALANCE_IN_PROGRESS))
        self.commits.append([(tp.topic, tp.partition, tp.offset) for tp in offsets])
        for tp in offsets:
            self.broker_committed[(tp.topic, tp.partition)] = tp.offset
        return offsets

    def committed(self, tps, timeout):
        return [TopicPartition(tp.topic, tp.partition, self.broker_committed.get((tp.topic, tp.partition), -1001))
                for tp in tps]

    def get_watermark_offsets(self, tp, timeout, cached):
        return (0, 100)

    def seek(self, tp):
        if self.fail_seek:
            raise KafkaException(KafkaError(KafkaError._STATE, "rebalancing"))
        self.seeks.append((tp.topic, tp.partition, tp.offset))

    def unsubscribe(self):
        self.unsubscribed = True

    def list_topics(self, timeout):
        return type("ClusterMetadata", (), {"topics": dict(self.cluster_topics)})()

    def assign(self, partitions):
        self.assigned = [(tp.topic, tp.partition, tp.offset) for tp in partitions]

    def pause(self, partitions):
        self.paused |= {(tp.topic, tp.partition) for tp in partitions}

    def resume(self, partitions):
        self.paused -= {(tp.topic, tp.partition) for tp in partitions}

    def close(self):
        pass


class FakeSink:
    """Buffers offsets; rows whose value is b'poison' are 'dead-lettered' (not held). ``table``
    is what the table records (next offset per partition), moved by every flush."""

    def __init__(self, due_at: int = 3) -> None:
        self.buf: dict[tuple[str, int], list[int]] = {}
        self.table: dict[tuple[str, int], int] = {}
        self.seen: dict[tuple[str, int], int] = {}
        self.refuse_with: int | None = None  # a zombie: another writer committed up to this offset
        self.table_down = False
        self.durable: list[tuple[str, int, int]] = []
        self.dead: list[int] = []
        self.due_at = due_at
        self.fail_flush = False
        self.log: list[str] = []

    def resume(self, topic, partition):
        if self.table_down:
            from sinks.offline.errors import OfflineStorageError

            raise OfflineStorageError("catalog down")
        self.buf.pop((topic, partition), None)
        self.seen.pop((topic, partition), None)
        return self.table.get((topic, partition))  # None: no table, the group's offset decides

    def add(self, batch):
        for r in batch:
            self.seen[(r.topic, r.partition)] = r.offset + 1
            if r.value == b"poison":
                self.dead.append(r.offset)
            else:
                self.buf.setdefault((r.topic, r.partition), []).append(r.offset)

    def due(self):
        return [tp for tp, b in self.buf.items() if len(b) >= self.due_at]

    def holds(self, topic, partition):
        return bool(self.buf.get((topic, partition)))

    def flush(self, topic, partition):
        if self.fail_flush:
            from schemas.errors import ServiceUnavailableError

            raise ServiceUnavailableError("S3 down")
        if self.refuse_with is not None:
            from sinks.offline.errors import OffsetsMismatchError

            self.table[(topic, partition)] = self.refuse_with
            self.buf.pop((topic, partition), None)
            raise OffsetsMismatchError("refused", recorded={(topic, partition): self.refuse_with})
        self.log.append(f"flush {partition}")
        self.durable += [(topic, partition, o) for o in self.buf.pop((topic, partition), [])]
        if (topic, partition) in self.seen:
            self.table[(topic, partition)] = self.seen[(topic, partition)]

    def flush_many(self, partitions):
        for tp in partitions:
            self.flush(*tp)

    def discard(self, topic, partition):
        self.log.append(f"discard {partition}")
        self.buf.pop((topic, partition), None)


def loop(due_at: int = 3, **kw) -> tuple[ConsumeLoop, FakeConsumer, FakeSink]:
    c, s = FakeConsumer(), FakeSink(due_at)
    sc = ConsumeLoop(c, s, subscription_pattern("fs"), role="offline sink", idle_commit_s=0.0,
                     backoff_max_s=0.0, **kw)
    sc.start()
    c.callbacks["assign"](c, [TopicPartition(T, 0), TopicPartition(T, 1)])
    return sc, c, s


def test_pattern_matches_group_topics_only() -> None:
    pat = re.compile(subscription_pattern("fs-test.1"))
    assert pat.match("fs-test.1.customers") and pat.match("fs-test.1.9lives")
    for other in ("fs-test.1._registry", "fs-test.1._deadletter", "fs-testX1.customers", "other.customers",
                  "fs-test.1.", "fs-test.1.-x"):
        assert not pat.match(other), other
    assert subscription_pattern("a+b") == "^a\\+b\\.[A-Za-z0-9]"


def test_config_never_auto_commits_and_starts_at_earliest() -> None:
    cfg = consumer_config("127.0.0.1:9092", "fs-offline", instance_id="sink-1")
    assert cfg["enable.auto.commit"] is False and cfg["auto.offset.reset"] == "earliest"
    assert cfg["group.instance.id"] == "sink-1" and cfg["topic.metadata.refresh.interval.ms"] <= 5000
    assert "group.instance.id" not in consumer_config("b", "g")


def test_a_backlog_is_read_without_librdkafkas_one_second_queue_pause() -> None:
    """librdkafka waits fetch.queue.backoff.ms (1 s by default) once its queue is full: a sink that
    drains faster than that idles between bursts (streams/kafka_client.FAST_DRAIN says how much)."""
    from confluent_kafka import Consumer

    cfg = consumer_config("127.0.0.1:1", "g")
    assert cfg["fetch.queue.backoff.ms"] == 5
    Consumer(cfg).close()  # this librdkafka knows the setting (an unknown one raises KafkaException)


def test_fetch_batching_is_opt_in() -> None:
    """The sink keeps librdkafka's fetch defaults; the online engine asks the broker to gather."""
    plain = consumer_config("b", "g")
    assert "fetch.wait.max.ms" not in plain and "fetch.min.bytes" not in plain
    held = consumer_config("b", "g", fetch_wait_ms=10, fetch_min_bytes=65_536)
    assert held["fetch.wait.max.ms"] == 10 and held["fetch.min.bytes"] == 65_536


@pytest.mark.parametrize(("flag", "expected"), [(None, None), ("0", 0), ("25", 25)])
def test_process_fetch_wait_flag(flag: str | None, expected: int | None) -> None:
    from featurestream.cli import build_parser
    from streams.online.engine import FETCH_WAIT_MS

    args = build_parser().parse_args(["process", *(["--fetch-wait-ms", flag] if flag else [])])
    # The CLI's default is the engine's (the CLI keeps the literal to import no engine at start-up).
    assert args.fetch_wait_ms == (FETCH_WAIT_MS if expected is None else expected)


@pytest.mark.parametrize("bad", ["-1", "x", "1.5", "60001"])
def test_process_fetch_wait_flag_refuses(bad: str, capsys: pytest.CaptureFixture[str]) -> None:
    from featurestream.cli import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["process", "--fetch-wait-ms", bad])
    assert "--fetch-wait-ms" in capsys.readouterr().err


def test_commits_only_after_flush_and_past_poison() -> None:
    sc, c, s = loop()
    c.batches = [[Msg(T, 0, 0), Msg(T, 0, 1)], [Msg(T, 0, 2), Msg(T, 0, 3, b"poison")]]
    sc.step()
    assert c.commits == []  # 2 rows buffered: not due, nothing committed
    sc.step()
    assert s.durable == [(T, 0, 0), (T, 0, 1), (T, 0, 2)] and s.dead == [3]
    assert c.commits == [[(T, 0, 4)]]  # the consumed position, past the trailing poison


def test_partition_with_only_skipped_messages_is_committed_without_a_flush() -> None:
    sc, c, s = loop()
    c.batches = [[Msg(T, 1, 5, b"poison"), Msg(T, 1, 6, b"poison")]]
    sc.step()
    assert c.commits == [[(T, 1, 7)]] and s.durable == []


def test_revoke_discards_and_drops_late_messages() -> None:
    sc, c, s = loop()
    c.batches = [[Msg(T, 0, 0), Msg(T, 0, 1)]]
    sc.step()
    c.callbacks["revoke"](c, [TopicPartition(T, 0)])
    assert "discard 0" in s.log and not s.holds(T, 0) and (T, 0) not in sc.assignment()
    c.batches = [[Msg(T, 0, 2), Msg(T, 0, 3), Msg(T, 0, 4)]]  # prefetched before the revoke
    sc.step()
    assert s.durable == [] and c.commits == []


def test_failed_group_commit_rewinds_to_where_the_table_says() -> None:
    sc, c, s = loop()
    c.broker_committed[(T, 0)] = 10
    c.batches = [[Msg(T, 0, 10), Msg(T, 0, 11), Msg(T, 0, 12)]]
    c.fail_commit = True
    sc.step()
    # the table holds 10..12 already (the flush committed them); the group's 10 is stale
    assert s.table[(T, 0)] == 13 and (T, 0, 13) in c.seeks and (T, 0, 10) not in c.seeks
    c.fail_commit = False
    c.batches = [[Msg(T, 0, 13), Msg(T, 0, 14), Msg(T, 0, 15)]]
    sc.step()
    assert c.commits[-1] == [(T, 0, 16)]
    assert [o for _, _, o in s.durable] == [10, 11, 12, 13, 14, 15]


def test_assignment_starts_where_the_table_says_not_the_group() -> None:
    c, s = FakeConsumer(), FakeSink()
    s.table[(T, 0)] = 42
    c.broker_committed[(T, 0)] = 7  # stale, lost or reset: ignored
    sc = ConsumeLoop(c, s, subscription_pattern("fs"), role="offline sink", idle_commit_s=0.0,
                     backoff_max_s=0.0)
    sc.start()
    c.callbacks["assign"](c, [TopicPartition(T, 0), TopicPartition(T, 1)])
    assert c.assigned == [(T, 0, 42), (T, 1, -1001)]  # partition 1: no table record, the group's offset


def test_refused_commit_rewinds_to_the_table_and_commits_nothing() -> None:
    sc, c, s = loop()
    s.refuse_with = 50  # a zombie's view: another sink committed up to 50 meanwhile
    c.batches = [[Msg(T, 0, 0), Msg(T, 0, 1), Msg(T, 0, 2)]]
    sc.step()
    assert c.commits == [] and (T, 0, 50) in c.seeks and s.durable == []
    s.refuse_with = None
    c.batches = [[Msg(T, 0, 50), Msg(T, 0, 51), Msg(T, 0, 52)]]
    sc.step()
    assert c.commits == [[(T, 0, 53)]] and s.table[(T, 0)] == 53


def test_a_table_that_does_not_answer_at_assignment_keeps_the_partition_paused() -> None:
    c, s = FakeConsumer(), FakeSink()
    s.table[(T, 0)] = 9
    s.table_down = True
    sc = ConsumeLoop(c, s, subscription_pattern("fs"), role="offline sink", idle_commit_s=0.0,
                     backoff_max_s=0.0)
    sc.start()
    c.callbacks["assign"](c, [TopicPartition(T, 0)])
    assert (T, 0) in c.paused
    sc.step()
    assert (T, 0) in c.paused  # still down
    s.table_down = False
    sc.step()
    assert (T, 0) not in c.paused and (T, 0, 9) in c.seeks


def test_storage_failure_rewinds_without_committing() -> None:
    sc, c, s = loop()
    s.fail_flush = True
    c.batches = [[Msg(T, 1, 0), Msg(T, 1, 1), Msg(T, 1, 2)]]
    sc.step()
    assert c.commits == [] and (T, 1, 0) in c.seeks  # never committed: back to the low watermark
    assert not s.holds(T, 1)


def test_consumer_errors_are_skipped_and_fatal_ones_raise() -> None:
    sc, c, _ = loop()
    c.batches = [[Msg(T, 0, 0, err=KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART))]]
    sc.step()
    fatal = KafkaError(KafkaError._FATAL, "fenced", fatal=True)
    c.batches = [[Msg(T, 0, 0, err=fatal)]]
    with pytest.raises(Exception, match="offline sink: the Kafka consumer failed"):
        sc.step()


def test_drain_flushes_and_commits_everything_on_shutdown() -> None:
    sc, c, s = loop(due_at=100)
    c.batches = [[Msg(T, 0, 0), Msg(T, 1, 0)]]
    sc.run(until=lambda: not c.batches)
    assert sorted(s.durable) == [(T, 0, 0), (T, 1, 0)]
    assert sorted(x for commit in c.commits for x in commit) == [(T, 0, 1), (T, 1, 1)]


def test_failed_seek_falls_back_to_resubscribing() -> None:
    sc, c, s = loop()
    c.batches = [[Msg(T, 0, 0), Msg(T, 0, 1), Msg(T, 0, 2)]]
    c.fail_commit = c.fail_seek = True
    sc.step()
    assert c.unsubscribed and sc.assignment() == set() and not s.holds(T, 0)
    c.batches = [[Msg(T, 0, 3)]]  # nothing is consumed until the group hands partitions back
    sc.step()
    assert not s.holds(T, 0)


# --------------------------------------------------------------------------- what /ready reports
def test_ready_once_assigned_not_ready_while_rebalancing() -> None:
    sc, c, _ = loop()
    sc.step()
    assert sc.health.readiness().ready and sc.health.readiness().partitions == 2
    c.callbacks["revoke"](c, [TopicPartition(T, 0), TopicPartition(T, 1)])
    sc.step()  # T still exists: the sink waits for its next assignment
    assert not sc.health.readiness().ready
    c.callbacks["assign"](c, [TopicPartition(T, 1)])
    assert sc.health.readiness().partitions == 1 and sc.health.readiness().ready


def test_a_sink_with_no_group_topic_to_consume_is_ready() -> None:
    c, s = FakeConsumer(), FakeSink()
    c.cluster_topics = {"fs._registry": None, "fs._deadletter": None, "other.customers": None}
    sc = ConsumeLoop(c, s, subscription_pattern("fs"), role="offline sink")
    sc.start()
    assert not sc.health.readiness().ready
    sc.step()  # librdkafka never calls on_assign when the pattern matches nothing
    assert sc.health.readiness().ready


def test_a_failing_flush_is_not_ready_and_names_no_backend() -> None:
    sc, c, s = loop(due_at=1)
    s.fail_flush = True
    c.batches = [[Msg(T, 0, 0)]]
    sc.step()
    state = sc.health.readiness()
    assert not state.ready and state.reason == "writing or committing records failed; retrying"
    s.fail_flush = False
    c.batches = [[Msg(T, 0, 0)]]
    sc.step()
    assert sc.health.readiness().ready


def test_uncommitted_records_count_what_is_consumed_and_not_yet_committed() -> None:
    sc, c, _ = loop(due_at=3)
    c.batches = [[Msg(T, 0, 10), Msg(T, 0, 11), Msg(T, 1, 0)]]
    sc.step()
    assert sc.uncommitted_records == 3  # buffered: nothing due yet, never committed before
    c.batches = [[Msg(T, 0, 12)]]
    sc.step()  # partition 0 reached due_at and was committed; partition 1 still holds one
    assert sc.committed()[(T, 0)] == 13 and sc.uncommitted_records == 1


def test_a_table_ahead_of_its_topic_keeps_the_partition_paused_and_says_why(caplog) -> None:
    """The Kafka cluster was recreated: the table records 150 but the partition ends at 100.
    Consuming from 150 would silently skip the new topic's first records."""
    c, s = FakeConsumer(), FakeSink()
    s.table[(T, 0)] = 150  # the fake's partitions end at 100
    s.table[(T, 1)] = 40
    sc = ConsumeLoop(c, s, subscription_pattern("fs"), role="offline sink", idle_commit_s=0.0,
                     backoff_max_s=0.0)
    sc.start()
    c.callbacks["assign"](c, [TopicPartition(T, 0), TopicPartition(T, 1)])
    assert (T, 0) in c.paused and (T, 1) not in c.paused
    assert "records offset 150 but the partition ends at 100" in caplog.text
    sc.step()
    assert (T, 0) in c.paused  # not resumed by the retry of unanswered tables


def test_chunk_bounds_name_each_partitions_first_offset_and_next_position() -> None:
    raws = [RawMessage(T, 0, 7, None, b"", None), RawMessage(T, 1, 3, None, b"", None),
            RawMessage(T, 0, 8, None, b"", None), RawMessage(T, 0, 9, None, b"", None)]
    assert chunk_bounds(raws) == ({(T, 0): 7, (T, 1): 3}, {(T, 0): 10, (T, 1): 4})
    assert chunk_bounds([]) == ({}, {})


@pytest.mark.parametrize("add_chunk", [1, 2, 1000])
def test_positions_are_the_same_whether_a_batch_is_added_whole_or_in_chunks(add_chunk: int) -> None:
    sc, c, s = loop(due_at=100, add_chunk=add_chunk)
    c.batches = [[Msg(T, 0, 10), Msg(T, 1, 0), Msg(T, 0, 11), Msg(T, 1, 1), Msg(T, 0, 12)]]
    sc.step()
    assert sc.consumed() == {(T, 0): 13, (T, 1): 2}
    assert sc.uncommitted_records == 5  # counted from each partition's first consumed offset
    sc.drain()
    assert sorted(s.durable) == [(T, 0, 10), (T, 0, 11), (T, 0, 12), (T, 1, 0), (T, 1, 1)]
    assert sorted(map(tuple, c.commits[-1])) == [(T, 0, 13), (T, 1, 2)]
