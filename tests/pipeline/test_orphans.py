"""Orphaned spool slots: two workers leave undelivered events in their slots (one of them
with a batch inserted but not acked), the gateway restarts with one worker, and every event
arrives exactly once - in `events` without FINAL and in `usage_hourly`. A slot whose owner
is alive is never touched."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import eventually
from tests.pipeline.helpers import FlakySink, make_event
from tests.pipeline.test_dedup import DiesAfterInsert, counts
from watchllm.events.pipeline import EventPipeline
from watchllm.events.spool import Spool, SpoolBusy, orphan_slots


async def leave_events(sink: Any, spool_dir: Path, run: str, n: int) -> EventPipeline:
    """A worker that spooled `n` events and is still running (its slot held)."""
    p = await EventPipeline(sink, spool_dir, batch_size=300, flush_ms=10, drain_timeout_s=0.1,
                            backoff_s=0.01, adopt_every_s=0).start()
    for i in range(n):
        p.put(make_event(i, run))
    await p.wait_spooled()
    return p


async def test_restart_with_fewer_workers_drains_the_orphaned_slot_exactly_once(
    clickhouse: Any, tmp_path: Path
) -> None:
    down = FlakySink(clickhouse)
    down.down = True
    w0 = await leave_events(down, tmp_path, "w0", 700)  # slot-0: nothing delivered
    crashing = DiesAfterInsert(clickhouse)
    w1 = await leave_events(crashing, tmp_path, "w1", 900)  # slot-1: one batch in, no ack
    await eventually(lambda: crashing.inserted == 1)
    assert (w0.spool.dir.name, w1.spool.dir.name) == ("slot-0", "slot-1")
    assert orphan_slots(tmp_path) == []  # both owners alive
    await w0.close()
    await w1.close()
    assert orphan_slots(tmp_path) == [0, 1]
    sent_before = (await counts(clickhouse))[0]  # the batch slot-1 sent before "dying"
    assert 0 < sent_before < 900

    # The restart, with one worker: it takes slot-0 and adopts slot-1. Another batch size:
    # slot-1's first batch is still the one in flight (replayed, same token, dropped).
    only = await EventPipeline(clickhouse, tmp_path, batch_size=1000, flush_ms=10,
                               adopt_every_s=0.05).start()
    for i in range(200):  # and new traffic meanwhile
        only.put(make_event(i, "new"))
    assert only.spool.dir.name == "slot-0"
    await eventually(lambda: only.metrics.slots_adopted == 1 and only._adopted is None)
    await only.flush()
    await only.close()
    assert await counts(clickhouse) == (1800, 1800, 1800)  # once each, table and view
    assert orphan_slots(tmp_path) == []
    slot1 = Spool(tmp_path, slot=1)
    assert slot1.pending_events == 0
    slot1.close()


async def test_a_slot_whose_owner_lives_is_never_adopted(clickhouse: Any, tmp_path: Path) -> None:
    down = FlakySink(clickhouse)
    down.down = True
    alive = await leave_events(down, tmp_path, "alive", 100)  # slot-0, held
    other = await EventPipeline(clickhouse, tmp_path, flush_ms=10, adopt_every_s=0.02).start()
    assert other.spool.dir.name == "slot-1"
    with pytest.raises(SpoolBusy):
        Spool(tmp_path, slot=0)
    await asyncio.sleep(0.3)  # ~15 adopter rounds
    await other.flush()
    assert other.metrics.slots_adopted == 0 and (await counts(clickhouse))[0] == 0
    await alive.close()  # its owner goes: now it is an orphan, and gets adopted
    await eventually(lambda: other.metrics.slots_adopted == 1 and other._adopted is None)
    await other.close()
    assert await counts(clickhouse) == (100, 100, 100)
