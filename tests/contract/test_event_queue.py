"""EventQueue contract: put never blocks or raises; flush and close are safe; what was
put is delivered (the in-memory queue delivers to its drain, the pipeline to ClickHouse)."""

from __future__ import annotations

import time

from tests.contract.conftest import QueueUnderTest
from tests.pipeline.helpers import make_event


async def test_put_is_fast_and_delivered(event_queue: QueueUnderTest) -> None:
    q = event_queue.queue
    started = time.perf_counter()
    for i in range(2000):
        q.put(make_event(i))
    assert (time.perf_counter() - started) / 2000 < 200e-6  # well under 0.2 ms each
    assert q.depth() > 0
    await q.flush()
    assert await event_queue.delivered() == [f"r-{i:08d}" for i in range(2000)]


async def test_put_never_raises_on_bad_input(event_queue: QueueUnderTest) -> None:
    q = event_queue.queue
    q.put({"event_id": object()})
    q.put(None)  # type: ignore[arg-type]
    q.put(make_event(1))
    await q.flush()
    assert "r-00000001" in await event_queue.delivered()


async def test_close_is_idempotent_and_put_after_close_is_harmless(
    event_queue: QueueUnderTest,
) -> None:
    q = event_queue.queue
    q.put(make_event(1))
    await q.close()
    await q.close()
    q.put(make_event(2))
    assert isinstance(q.depth(), int)
