"""featurestream/http/delivery.py: delivery reports from another thread settle asyncio futures, in batches."""

from __future__ import annotations

import asyncio
import threading

from featurestream.http.delivery import DeliveryOverdue, LoopDeliveries
from schemas.errors import ServiceUnavailableError


def test_reports_from_a_thread_settle_every_future_with_its_own_outcome_in_few_wakeups():
    async def run() -> tuple[list, int]:
        loop = asyncio.get_running_loop()
        deliveries = LoopDeliveries(loop, 60.0)
        expected = [deliveries.expect() for _ in range(2000)]

        def delivery_thread() -> None:  # as librdkafka's poll() runs callbacks: many in a row
            for n, (_future, on_delivery) in enumerate(expected):
                if n % 7 == 3:
                    on_delivery(ServiceUnavailableError(f"record {n} not delivered"), None)
                else:
                    on_delivery(None, (n % 3, n))

        thread = threading.Thread(target=delivery_thread)
        thread.start()
        outcomes = await asyncio.wait_for(asyncio.gather(*(f for f, _cb in expected), return_exceptions=True), 30)
        thread.join()
        return outcomes, deliveries.wakeups

    outcomes, wakeups = asyncio.run(run())
    for n, outcome in enumerate(outcomes):
        if n % 7 == 3:
            assert isinstance(outcome, ServiceUnavailableError) and str(outcome) == f"record {n} not delivered"
        else:
            assert outcome == (n % 3, n)
    assert 1 <= wakeups < len(outcomes) / 4, f"{wakeups} loop wake-ups for {len(outcomes)} reports"


def test_a_report_for_a_put_that_stopped_waiting_is_dropped_and_later_ones_still_settle():
    async def run() -> tuple[bool, object]:
        deliveries = LoopDeliveries(asyncio.get_running_loop(), 60.0)
        gone, on_gone = deliveries.expect()
        kept, on_kept = deliveries.expect()
        gone.cancel()  # its request timed out or its client left
        threading.Thread(target=lambda: (on_gone(None, (0, 1)), on_kept(None, (0, 2)))).start()
        return gone.cancelled(), await asyncio.wait_for(kept, 10)

    assert asyncio.run(run()) == (True, (0, 2))


def test_a_future_with_no_report_fails_once_overdue_and_settled_ones_leave_the_queue():
    async def run() -> None:
        loop = asyncio.get_running_loop()
        deliveries = LoopDeliveries(loop, 0.2, sweep_s=0.05)
        settled, on_settled = deliveries.expect()
        silent, _never_called = deliveries.expect()
        on_settled(None, (1, 7))
        assert await asyncio.wait_for(settled, 10) == (1, 7)
        assert not silent.done()  # well within its bound: still waiting
        started = loop.time()
        try:
            await asyncio.wait_for(silent, 10)
        except DeliveryOverdue as exc:
            assert "0.2 s" in str(exc)
        else:
            raise AssertionError("a future with no report never failed")
        assert 0.1 <= loop.time() - started <= 5.0
        await _until(lambda: deliveries.waiting == 0)

    asyncio.run(run())


def test_the_sweep_stops_when_nothing_waits_and_starts_again_for_the_next_put():
    async def run() -> None:
        deliveries = LoopDeliveries(asyncio.get_running_loop(), 60.0, sweep_s=0.02)
        first, on_first = deliveries.expect()
        on_first(None, (0, 1))
        await asyncio.wait_for(first, 10)
        await _until(lambda: deliveries.waiting == 0)
        second, _silent = deliveries.expect()
        assert deliveries.waiting == 1
        second.cancel()  # its request gave up: only a sweep armed again since can drop it
        await _until(lambda: deliveries.waiting == 0)

    asyncio.run(run())


def test_settled_futures_behind_a_silent_one_are_dropped_once_there_are_many():
    async def run() -> None:
        deliveries = LoopDeliveries(asyncio.get_running_loop(), 60.0, sweep_s=0.02)
        silent, _never = deliveries.expect()  # its report never comes, and its deadline is far
        callbacks = [deliveries.expect() for _ in range(12_000)]
        for n, (_future, on_delivery) in enumerate(callbacks):
            on_delivery(None, (0, n))
        await asyncio.wait_for(asyncio.gather(*(f for f, _cb in callbacks)), 10)
        await _until(lambda: deliveries.waiting == 1)  # only the silent one is kept
        assert not silent.done()
        silent.cancel()

    asyncio.run(run())


async def _until(condition, timeout_s: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)
