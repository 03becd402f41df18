"""featurestream/http/delivery.py: delivery reports from another thread settle asyncio futures, in batches."""

from __future__ import annotations

import asyncio
import threading

from featurestream.http.delivery import LoopDeliveries
from schemas.errors import ServiceUnavailableError


def test_reports_from_a_thread_settle_every_future_with_its_own_outcome_in_few_wakeups():
    async def run() -> tuple[list, int]:
        loop = asyncio.get_running_loop()
        deliveries = LoopDeliveries(loop)
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
        deliveries = LoopDeliveries(asyncio.get_running_loop())
        gone, on_gone = deliveries.expect()
        kept, on_kept = deliveries.expect()
        gone.cancel()  # its request timed out or its client left
        threading.Thread(target=lambda: (on_gone(None, (0, 1)), on_kept(None, (0, 2)))).start()
        return gone.cancelled(), await asyncio.wait_for(kept, 10)

    assert asyncio.run(run()) == (True, (0, 2))
