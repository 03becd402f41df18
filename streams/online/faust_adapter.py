"""The one adapter between featurestream and faust/aiokafka internals.

Everything the online processor does with faust beyond its public API is here, and
:func:`check_compat` says, by name, what is missing when an upgrade of faust-streaming or
aiokafka changes it (the processor refuses to start, and tests/unit/test_faust_adapter.py fails,
with that message). The public face: :func:`install` (the transport below),
:func:`set_resubscribe_delay`, :func:`resubscribe`, :func:`subscribed_topics` and
:func:`subscription_drift`.

faust's aiokafka transport gets these fixes, which the online processor needs.

1. **Per-message cost.** faust's fetch loop hands every message to the conductor through
   ``Service.wait_first(callback(message), suspend_flow.wait())``, which creates four asyncio
   tasks and an ``asyncio.wait`` per message: measured, that alone caps a no-op agent at about
   7-8k records/s on this machine. :class:`FastDrainConsumer` delivers with a plain ``await``
   while the flow is running and keeps faust's semantics for the rest (read offsets, gaps,
   commit-every, dropping messages fetched while the flow is suspended).

   The one difference: a message whose delivery *blocks* (the agent's queue is full) when a
   rebalance suspends the flow is delivered once the queue has room instead of being
   cancelled. That is harmless here: the processor's write-if-newer rule makes a repeated
   apply a no-op, and faust discards commits for partitions that were revoked
   (``Consumer._commit_offsets``), so no offset moves past a record another member owns.

2. **A rebalance that overlaps the seek.** After a rebalance faust checks its own view of the
   assignment and then asks aiokafka to seek to the committed offsets; if a second rebalance
   (a topic deleted, a member joining) empties aiokafka's assignment in between, aiokafka
   asserts "No partitions are currently assigned" and the whole worker crashes. The seek is
   only needed for partitions we hold; with none, the next rebalance seeks again.

3. **A partition revoked under the fetch loop.** faust's ``getmany`` asks aiokafka for each fetched
   record's high watermark, for its lag monitor. When the processor unsubscribes from a deleted
   group's topic, aiokafka revokes the topic's partitions at once, and a record fetched before that
   made aiokafka assert "Partition is not assigned": the fetcher crashed and the worker stopped
   (seen in a test that deletes a group while a writer still publishes to it). The lag monitor
   keeps its last figure for such a partition; the record itself is dropped by the suspended flow,
   or, delivered, meets the same rules as any record of a deleted group.

4. **Records lost to a rebalance that a subscription change starts** (found by the test that deletes a
   group and creates it again while the processor runs: about 1 run in 8 left records of the new topic
   unserved until the processor restarted). faust's rebalance keeps no record it has fetched but not
   applied: it stops the flow, clears the agents' queues, and after the new assignment seeks every
   partition back to its committed offset, then clears the queues once more as the flow resumes.
   Two gaps lost records in a running processor:

   - ``subscribe()`` (a group created or deleted) gives aiokafka a new subscription with no assignment
     yet, so when the rebalance revokes the old partitions, faust's app reads an empty assignment and
     does not stop the flow. Records fetched while the new assignment is set up go on into the agent's
     queue, and the resume clears them, after the seek. :meth:`FastDrainConsumer.on_partitions_revoked`
     stops the flow at every revocation, as faust does when it sees the assignment.
   - aiokafka's ``seek_to_committed`` leaves a partition with no committed offset where the fetcher is
     (it seeks only offsets > 0), so records of a new topic fetched and then dropped are never read
     again. :meth:`FastDrainConsumer.seek_to_committed` seeks such partitions (those the fetcher has
     moved past offset 0) to their beginning, which is where ``auto_offset_reset="earliest"`` starts
     them. Reading a few records again is harmless: the write-if-newer rule makes a repeated apply a
     no-op.

5. **A commit during a subscription change.** Between ``subscribe()`` and the new assignment aiokafka
   refuses every commit, even of nothing ("No partitions assigned"), and faust crashes the worker on
   that error. A periodic commit lands in that window now and then (seen once in a suite run with many
   groups created). :class:`SafeCommitConsumerThread` skips a commit while nothing is assigned, on the
   consumer's own thread, so no ``subscribe()`` can come between the check and the commit; the offsets
   are committed by the next commit after the assignment. faust's livelock check, a diagnostic, read
   the position of a partition still awaiting one, and aiokafka's assertion crashed the worker too
   (seen once, after the seek of point 4): the check now skips such a partition.

6. **A subscription change made during a rebalance is dropped.** faust's ``Conductor._subscriber``
   clears a change flagged while the app rebalances and does not subscribe. A group created during
   a rebalance was then never consumed by that processor: its acknowledged records did not reach the
   online store (seen once, a group purged and created again under a writer). :func:`subscribed_topics`
   reads what aiokafka is subscribed to, :func:`subscription_drift` compares it with what was asked,
   and ``streams/online/faust_app.py`` asks again when the drift outlives a poll.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import logging
import re
from collections.abc import Callable, Mapping
from typing import Any, cast

from aiokafka.errors import IllegalStateError
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka as faust_aiokafka
from mode import Service, ServiceT

log = logging.getLogger("featurestream.processor")

_NOT_ASSIGNED = "No partitions are currently assigned"
_REVOKED = "Partition is not assigned"


class SafeCommitConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """faust's aiokafka consumer thread, without the crash of a commit during a subscription change."""

    async def _commit(self, offsets: Mapping[Any, int]) -> bool:
        # Runs on the consumer's thread, as subscribe() does: nothing comes between the check and the
        # commit (point 5 of the module's docstring).
        if not self._ensure_consumer().assignment():
            log.info("commit skipped: a subscription change is under way; the next commit takes the offsets")
            return False
        return cast(bool, await super()._commit(offsets))

    async def seek_fetched_to_beginning(self, tps: list[Any]) -> None:
        """Seek those of ``tps`` whose fetcher has moved past offset 0 to their beginning."""
        await self.call_thread(self._seek_fetched_to_beginning, tps)

    async def _seek_fetched_to_beginning(self, tps: list[Any]) -> None:
        consumer = self._ensure_consumer()
        assignment = consumer._subscription.subscription.assignment if consumer._subscription.subscription else None
        if assignment is None:
            return  # a subscription change is under way: the next assignment seeks again
        # A partition still awaiting its first position starts at the beginning anyway: leave it to
        # aiokafka, rather than send every idle group's partitions to ListOffsets at each rebalance.
        states = [(tp, assignment.state_value(tp)) for tp in tps]
        fetched = [tp for tp, st in states if st is not None and st.has_valid_position and st.position > 0]
        if fetched:
            await consumer.seek_to_beginning(*fetched)

    def verify_event_path(self, now: float, tp: Any) -> None:
        # faust's livelock check reads the position of every assigned partition, and aiokafka asserts
        # on a partition still awaiting its position (a new topic's, while ListOffsets is under way):
        # the check is only a diagnostic, so it skips that partition rather than crash the worker.
        try:
            super().verify_event_path(now, tp)
        except AssertionError:
            log.debug("livelock check skipped %s: its position is not known yet", tp)


class FastDrainConsumer(faust_aiokafka.Consumer):
    """faust's aiokafka consumer with a cheaper fetch loop, a crash-free seek and commit, and a
    rebalance that loses no fetched record."""

    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return SafeCommitConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def _drain_messages(self, fetcher: ServiceT) -> None:  # pragma: no cover - faust's loop
        # Mirrors faust.transport.consumer.Consumer._drain_messages (faust-streaming 0.15)
        # except for the delivery line; keep the two in step when upgrading faust.
        callback = self.callback
        getmany = self.getmany
        consumer_should_stop = cast(Service, self)._stopped.is_set
        fetcher_should_stop = cast(Service, fetcher)._stopped.is_set
        flow_suspended = self.suspend_flow.is_set
        get_read_offset = self._read_offset.__getitem__
        set_read_offset = self._read_offset.__setitem__
        commit_every = self._commit_every
        acks_enabled_for = self.app.topics.acks_enabled_for
        sleep = asyncio.sleep
        yield_every = 100
        num_since_yield = 0
        set_flag, unset_flag = self.diag.set_flag, self.diag.unset_flag
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                set_flag(CONSUMER_FETCHING)
                ait = getmany(timeout=1.0)
                await sleep(0)  # getmany can return at once, repeatedly: let other tasks run
                if self.should_stop:
                    continue
                async for tp, message in ait:
                    num_since_yield += 1
                    if num_since_yield > yield_every:
                        await sleep(0)
                        num_since_yield = 0
                    offset = message.offset
                    r_offset = get_read_offset(tp)
                    if r_offset is not None and offset < r_offset:
                        continue  # already read (faust drops these too)
                    gap = offset - (r_offset or 0)
                    if gap > 1 and r_offset and acks_enabled_for(message.topic):
                        await self._add_gap(tp, r_offset + 1, offset)
                    if commit_every is not None and self._n_acked >= commit_every:
                        self._n_acked = 0
                        await self.commit()
                    if flow_suspended():
                        # A rebalance is under way: faust drops the message (its partition
                        # is sought back to the committed offset when the flow resumes).
                        set_read_offset(tp, offset)
                        continue
                    await callback(message)
                    set_read_offset(tp, offset)
                unset_flag(CONSUMER_FETCHING)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                self.log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                self.log.info("Consumer shutting down for user cancel.")
                return
            raise
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)
            raise
        finally:
            unset_flag(CONSUMER_FETCHING)

    def highwater(self, tp: Any) -> int:
        try:
            return super().highwater(tp)
        except AssertionError as exc:
            if _REVOKED not in str(exc):
                raise
            log.info("%s was revoked under the fetch loop (a deleted group's topic, or a rebalance)", tp)
            return cast(int, self.app.monitor.tp_end_offsets.get(tp, 0))  # the last figure it had

    async def on_partitions_revoked(self, revoked: set[Any]) -> None:
        # faust's app stops the flow only when aiokafka still reports an assignment, which a
        # subscription change has already emptied (point 4 of the module's docstring).
        self.stop_flow()
        self.app.flow_control.suspend()
        self.app.flow_control.clear()  # records queued but not taken are fetched again after the seek
        await super().on_partitions_revoked(revoked)

    async def seek_to_committed(self) -> Mapping[Any, int]:
        committed = await super().seek_to_committed()
        # aiokafka seeks only committed offsets > 0 (point 4 of the module's docstring)
        fresh = [tp for tp, offset in committed.items() if offset is None or offset <= 0]
        if fresh and self.app.conf.consumer_auto_offset_reset == "earliest":
            try:
                await cast(SafeCommitConsumerThread, self._thread).seek_fetched_to_beginning(fresh)
            except (AssertionError, IllegalStateError) as exc:  # a newer rebalance took them: it seeks again
                log.info("partitions left the assignment before the seek to their beginning: %s", exc)
        return committed

    async def perform_seek(self) -> None:
        try:
            await super().perform_seek()
        except (AssertionError, IllegalStateError) as exc:
            if _NOT_ASSIGNED not in str(exc):
                raise
            log.info("a new rebalance emptied the assignment before the seek; the next one seeks again")


class FastDrainTransport(faust_aiokafka.Transport):
    Consumer = FastDrainConsumer


def install(app: Any) -> None:
    """Make ``app`` use :class:`FastDrainTransport`; call before anything touches ``app.topics``."""
    app.transport = FastDrainTransport(app.conf.broker_consumer, app)


# What the adapter relies on, checked by check_compat(). The digest is of faust's own
# Consumer._drain_messages, which FastDrainConsumer mirrors: when faust changes it, the copy
# must be brought in step (then update the digest).
MIRRORED_DRAIN_SHA256 = "44a2500309e83c63"
_SELF_ASSIGN = re.compile(r"\bself\.(\w+)\s*(?::[^=\n]*)?=[^=]")
CONSUMER_ATTRS = ("_drain_messages", "perform_seek", "getmany", "callback", "_read_offset", "_commit_every",
                   "_add_gap", "commit", "suspend_flow", "diag", "consumer_stopped_errors", "highwater",
                   "on_partitions_revoked", "stop_flow", "seek_to_committed", "_thread", "_new_consumer_thread")


def check_compat() -> list[str]:
    """What this adapter needs from the installed faust/aiokafka and does not find (empty: all there)."""
    import faust
    from faust.transport.conductor import Conductor
    from faust.transport.consumer import Consumer as FaustConsumer

    problems = []
    where = f"faust-streaming {faust.__version__}"
    instance_attrs = _instance_attrs(faust_aiokafka.Consumer)
    for attr in CONSUMER_ATTRS:
        if not hasattr(faust_aiokafka.Consumer, attr) and attr not in instance_attrs:
            problems.append(f"{where}: faust.transport.drivers.aiokafka.Consumer has no {attr!r}")
    for attr in ("_commit", "_ensure_consumer", "call_thread", "verify_event_path"):
        if not hasattr(faust_aiokafka.AIOKafkaConsumerThread, attr):
            problems.append(f"{where}: faust.transport.drivers.aiokafka.AIOKafkaConsumerThread has no {attr!r}")
    problems.extend(_aiokafka_problems())
    if not hasattr(faust.App, "flow_control"):
        problems.append(f"{where}: faust.App has no 'flow_control' (stopping the flow at every revocation)")
    if not hasattr(Conductor, "_flag_changes"):
        problems.append(f"{where}: Conductor._flag_changes is gone (used to resubscribe to new group topics)")
    if not hasattr(Conductor, "_resubscribe_sleep_lock_seconds"):
        problems.append(f"{where}: Conductor._resubscribe_sleep_lock_seconds is gone (the resubscribe delay)")
    try:
        digest = hashlib.sha256(inspect.getsource(FaustConsumer._drain_messages).encode()).hexdigest()[:16]
    except (OSError, TypeError, AttributeError) as exc:
        problems.append(f"{where}: cannot read Consumer._drain_messages to compare with our copy: {exc}")
    else:
        if digest != MIRRORED_DRAIN_SHA256:
            problems.append(f"{where}: faust.transport.consumer.Consumer._drain_messages changed (sha256 prefix "
                            f"{digest}, mirrored {MIRRORED_DRAIN_SHA256}): bring "
                            "streams/online/faust_adapter.FastDrainConsumer._drain_messages in step, then "
                            "update MIRRORED_DRAIN_SHA256")
    if not issubclass(IllegalStateError, Exception):  # pragma: no cover - import above fails first
        problems.append("aiokafka.errors.IllegalStateError is not an exception class")
    if "_stopped" not in _instance_attrs(Service):
        problems.append("mode.Service has no '_stopped' event (the fetch loop's stop signal)")
    return problems


def _aiokafka_problems() -> list[str]:
    """What SafeCommitConsumerThread reads of aiokafka's subscription state and does not find."""
    import aiokafka
    from aiokafka.consumer.subscription_state import Assignment, SubscriptionState, TopicPartitionState

    where = f"aiokafka {aiokafka.__version__}"
    wanted = [(aiokafka.AIOKafkaConsumer, ("assignment", "seek_to_beginning", "_subscription")),
              (SubscriptionState, ("subscription",)), (Assignment, ("state_value",)),
              (TopicPartitionState, ("has_valid_position", "position"))]
    return [f"{where}: {cls.__name__} has no {attr!r} (seeking fetched, uncommitted partitions to their beginning)"
            for cls, attrs in wanted for attr in attrs
            if not hasattr(cls, attr) and attr not in _instance_attrs(cls)]


def _instance_attrs(cls: type) -> set[str]:
    """Attributes set on instances (``self.x = ...``) anywhere in ``cls``'s classes' source."""
    found: set[str] = set()
    for klass in cls.__mro__:
        try:
            source = inspect.getsource(klass)
        except (OSError, TypeError):
            continue
        found.update(m.group(1) for m in _SELF_ASSIGN.finditer(source))
    return found


def require_compat() -> None:
    """Raise a RuntimeError naming every missing piece (the processor calls this before starting)."""
    problems = check_compat()
    if problems:
        raise RuntimeError("the installed faust-streaming/aiokafka do not have what "
                           "streams/online/faust_adapter.py relies on:\n- " + "\n- ".join(problems))


def set_resubscribe_delay(app: Any, seconds: float) -> None:
    """faust coalesces subscription changes for 45 s; a new feature group should be consumed
    within seconds of its creation."""
    app.topics._resubscribe_sleep_lock_seconds = seconds


def resubscribe(app: Any) -> None:
    """Ask faust's topic conductor to apply the channels' new topic lists."""
    app.topics._flag_changes()


def subscribed_topics(app: Any) -> frozenset[str] | None:
    """The topics aiokafka is subscribed to now (None: its consumer is not started yet).

    faust's conductor drops a change flagged while the app rebalances (``Conductor._subscriber``
    clears the event and does not subscribe), so what was asked is not always what is subscribed:
    a group created during a rebalance was never consumed by that processor."""
    thread = getattr(app.consumer, "_thread", None)
    if thread is None:
        return None
    try:
        return frozenset(thread._ensure_consumer().subscription())
    except Exception:  # noqa: BLE001 - not started yet, or stopping: nothing to compare
        return None


def subscription_drift(wanted: set[str], actual: frozenset[str] | None,
                       ours: Callable[[str], bool]) -> tuple[list[str], list[str]]:
    """(topics wanted but not subscribed, subscribed topics of ours no longer wanted); the
    conductor's own topics (faust's assignor) are not ours and are ignored."""
    if actual is None:
        return [], []
    return sorted(wanted - actual), sorted(t for t in actual - wanted if ours(t))
