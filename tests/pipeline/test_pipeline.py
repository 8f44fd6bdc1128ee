"""The pipeline into real chDB: batching, exactly-once after sink failures, poison events,
bounds, graceful shutdown."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.conftest import eventually
from tests.pipeline.helpers import FlakySink, make_event, stored
from watchllm.events import pipeline as pipeline_mod
from watchllm.events.pipeline import EventPipeline, dumps
from watchllm.events.spool import Spool


async def started(sink: Any, spool: Path, **kw: Any) -> EventPipeline:
    kw.setdefault("flush_ms", 50)
    kw.setdefault("backoff_s", 0.01)
    kw.setdefault("backoff_max_s", 0.2)
    return await EventPipeline(sink, spool, **kw).start()


async def put_all(p: EventPipeline, events: list[dict[str, Any]], chunk: int = 500) -> None:
    for i, ev in enumerate(events):
        p.put(ev)
        if i % chunk == chunk - 1:
            await asyncio.sleep(0)  # let the shipper run, as a busy server would


def dead_letters(p: EventPipeline) -> list[dict[str, Any]]:
    if not p.dead_letter_path.exists():
        return []
    return [orjson.loads(line) for line in p.dead_letter_path.read_bytes().splitlines()]


async def test_every_event_is_stored_once(clickhouse: Any, tmp_path: Path) -> None:
    p = await started(clickhouse, tmp_path, batch_size=1000)
    await put_all(p, [make_event(i) for i in range(5000)])
    await p.flush()
    assert await stored(clickhouse) == (5000, 5000)
    m = p.snapshot()
    assert m["events_sent"] == 5000 and m["queue_depth"] == 0 and m["spool_bytes"] == 0
    assert m["batches_sent"] >= 5  # flushed at N events, not one giant batch
    rows = await clickhouse.query(
        "SELECT model, tags, metadata, cache_status FROM events WHERE event_id = {id:String}",
        {"id": "r-00000001"},
    )
    assert rows == [{"model": "claude-3-5-haiku", "tags": ["bench", "t"],
                     "metadata": {"team": "a"}, "cache_status": "HIT"}]
    await p.close()


async def test_flushes_after_interval_without_a_full_batch(clickhouse: Any, tmp_path: Path) -> None:
    p = await started(clickhouse, tmp_path, batch_size=10_000, flush_ms=100)
    p.put(make_event(1))
    assert await stored(clickhouse) == (0, 0)
    await eventually(lambda: p.metrics.events_sent == 1, within_s=5)
    assert await stored(clickhouse) == (1, 1)
    await p.close()


async def test_an_idle_shipper_is_woken_by_the_writer_and_by_flush(
        clickhouse: Any, tmp_path: Path, monkeypatch: Any) -> None:
    # The idle shipper sleeps without polling: were the writer not to wake it, an event
    # would wait for the minute-long fallback check and this test would time out.
    monkeypatch.setattr(pipeline_mod, "IDLE_CHECK_S", 60.0)
    p = await started(clickhouse, tmp_path, batch_size=10_000, flush_ms=100)
    def sent(n: int) -> Callable[[], bool]:
        return lambda: p.metrics.events_sent == n

    for i in range(3):  # idle, then an event; again after each delivery
        await asyncio.sleep(0.2)
        p.put(make_event(i))
        await eventually(sent(i + 1), within_s=10)
    await p.close()

    # A shipper gathering a batch (flush_ms a minute away) ships at once on flush().
    p = await started(clickhouse, tmp_path / "b", batch_size=10_000, flush_ms=60_000)
    p.put(make_event(10))
    await asyncio.sleep(0.2)
    async with asyncio.timeout(10):
        await p.flush()
    assert p.metrics.events_sent == 1
    assert await stored(clickhouse) == (4, 4)
    await p.close()


async def test_tool_calls_and_agent_steps_reach_their_tables(
    clickhouse: Any, tmp_path: Path
) -> None:
    p = await started(clickhouse, tmp_path)
    now = dt.datetime.now(dt.UTC)
    p.put({"event_id": "t1", "event_type": "tool_call", "project_id": "p", "timestamp": now,
           "tool_name": "search", "tool_input": "{}", "latency_ms": 3.5})
    p.put({"event_id": "s1", "event_type": "agent_step", "project_id": "p", "timestamp": now,
           "step_number": 2, "step_name": "plan"})
    await p.flush()
    assert await stored(clickhouse) == (2, 2)
    assert await stored(clickhouse, "tool_calls") == (1, 1)
    assert await stored(clickhouse, "agent_steps") == (1, 1)
    ts = await clickhouse.query("SELECT timestamp FROM tool_calls")
    assert abs(ts[0]["timestamp"].timestamp() - now.timestamp()) < 0.002
    await p.close()


async def test_sink_down_under_load_then_exactly_once(clickhouse: Any, tmp_path: Path) -> None:
    sink = FlakySink(clickhouse)
    p = await started(sink, tmp_path, batch_size=500)
    await put_all(p, [make_event(i) for i in range(2000)])
    await eventually(lambda: p.metrics.events_sent >= 500)
    sink.down = True
    await put_all(p, [make_event(i) for i in range(2000, 8000)])  # arrives while down
    await eventually(lambda: sink.failures >= 3)
    assert p.depth() > 0 and p.snapshot()["spool_bytes"] > 0
    assert p.metrics.batches_failed >= 3
    sink.down = False
    await put_all(p, [make_event(i) for i in range(8000, 9000)])
    await p.flush()
    assert await stored(clickhouse) == (9000, 9000)
    assert p.metrics.dead_lettered == 0 and p.metrics.dropped == 0
    await p.close()


async def test_chdb_table_unavailable_then_recovers(clickhouse: Any, tmp_path: Path) -> None:
    """The real engine refuses inserts (table detached) for a while; nothing is lost."""
    p = await started(clickhouse, tmp_path, batch_size=300)
    await clickhouse.command("DETACH TABLE events")
    await put_all(p, [make_event(i) for i in range(3000)])
    await eventually(lambda: p.metrics.batches_failed >= 2)
    assert p.metrics.events_sent == 0 and p.metrics.dead_lettered == 0
    await clickhouse.command("ATTACH TABLE events")
    await p.flush()
    assert await stored(clickhouse) == (3000, 3000)
    await p.close()


async def test_poison_event_goes_to_dead_letter_rest_is_stored(
    clickhouse: Any, tmp_path: Path
) -> None:
    p = await started(clickhouse, tmp_path, batch_size=100)
    events = [make_event(i) for i in range(100)]
    events[37]["tokens_input"] = "lots"  # the encoder refuses it (RowBinaryError)
    events[80]["event_type"] = "no_such_type"
    await put_all(p, events)
    await p.flush()
    assert await stored(clickhouse) == (98, 98)
    dead = dead_letters(p)
    assert sorted(d["event"]["event_id"] for d in dead) == ["r-00000037", "r-00000080"]
    assert all(d["table"] == "events" for d in dead)
    assert any("tokens_input" in d["error"] for d in dead)
    assert p.metrics.dead_lettered == 2
    await p.close()


async def test_rejected_batch_is_bisected_to_the_bad_event(clickhouse: Any, tmp_path: Path) -> None:
    sink = FlakySink(clickhouse)
    sink.poison = {"r-00000123"}  # ClickHouse-side rejection the encoder cannot foresee
    p = await started(sink, tmp_path, batch_size=1000)
    await put_all(p, [make_event(i) for i in range(1000)])
    await p.flush()
    assert await stored(clickhouse) == (999, 999)
    assert [d["event"]["event_id"] for d in dead_letters(p)] == ["r-00000123"]
    assert "rejected" in dead_letters(p)[0]["error"]
    assert sink.attempts < 40  # log2(1000) levels, not one insert per event
    await p.close()


async def test_put_never_raises_and_unserialisable_is_dead_lettered(
    clickhouse: Any, tmp_path: Path
) -> None:
    p = await started(clickhouse, tmp_path)
    p.put({**make_event(1), "metadata": {"k": object()}})
    p.put(make_event(2))
    p.put("not a dict")  # type: ignore[arg-type]
    await p.flush()
    assert await stored(clickhouse) == (1, 1)
    assert len(dead_letters(p)) == 2
    await p.close()


@pytest.mark.parametrize("hot_bytes", [64 << 20, 0])
async def test_a_non_object_in_an_encodable_record_is_dead_lettered(
    clickhouse: Any, tmp_path: Path, hot_bytes: int
) -> None:
    """JSON can encode a string, so the record is one array: the string must still be set
    aside, and the events around it stored, whether the batch is built from the records
    kept in memory or read back from disk (`hot_bytes=0`)."""
    p = await started(clickhouse, tmp_path, hot_bytes=hot_bytes)
    p.put(make_event(1))
    p.put("not a dict")  # type: ignore[arg-type]
    p.put(make_event(2))
    await p.flush()
    assert await stored(clickhouse) == (2, 2)
    assert len(dead_letters(p)) == 1
    await p.close()


async def test_large_groups_are_split_into_records_of_bounded_size(
    clickhouse: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A group over RECORD_BYTES is halved until each record fits (a single event larger
    than that is a record of its own); every event is stored once, an unencodable one
    dead-lettered alone."""
    monkeypatch.setattr(pipeline_mod, "RECORD_BYTES", 4000)
    p = await started(clickhouse, tmp_path, hot_bytes=0)  # read back from disk
    events = [make_event(i) for i in range(60)]
    events[7] = {**events[7], "prompt": "x" * 10_000}  # larger than any record may be
    events[30] = {**events[30], "metadata": {"k": object()}}
    for ev in events:
        p.put(ev)
    await p.flush()
    assert await stored(clickhouse) == (59, 59)
    assert len(dead_letters(p)) == 1
    records, _ = p.spool.read((0, 0), 1000)
    assert len(records) > 10 and all(r.array for r in records)
    assert all(len(r.payload) <= 4000 or r.count == 1 for r in records)
    await p.close()


async def test_memory_and_disk_stay_bounded_while_sink_is_down(
    clickhouse: Any, tmp_path: Path
) -> None:
    sink = FlakySink(clickhouse)
    sink.down = True
    p = await started(sink, tmp_path, buffer=1000, max_bytes=1 << 20)
    await put_all(p, [make_event(i) for i in range(20_000)], chunk=200)
    await eventually(lambda: p._written == p.metrics.accepted)  # the writer is done
    assert p.spool.pending_bytes <= 1 << 20
    assert p.metrics.dropped > 0  # refused and counted, not buffered without bound
    assert p.metrics.accepted + p.metrics.dropped >= 20_000  # (spool-full drops count too)
    spooled = p.metrics.spooled
    sink.down = False
    await p.flush()
    assert await stored(clickhouse) == (spooled, spooled)
    await p.close()


async def test_close_while_down_keeps_events_for_the_next_process(
    clickhouse: Any, tmp_path: Path
) -> None:
    sink = FlakySink(clickhouse)
    sink.down = True
    p = await started(sink, tmp_path, drain_timeout_s=0.3)
    await put_all(p, [make_event(i) for i in range(1500)])
    await p.close()  # gives up draining after 0.3 s; everything is on disk
    assert await stored(clickhouse) == (0, 0)
    p2 = await started(clickhouse, tmp_path)
    assert p2.depth() == 1500
    await p2.flush()
    assert await stored(clickhouse) == (1500, 1500)
    await p2.close()


async def test_records_of_json_lines_left_by_an_earlier_version_are_delivered(
    clickhouse: Any, tmp_path: Path
) -> None:
    """The writer now spools each record as one JSON array (b"WLS2"); a spool left with
    JSON-lines records (b"WLS1") by an earlier version is still delivered, whole and once,
    before and alongside the new records."""
    p = await started(clickhouse, tmp_path)
    slot = p.spool.dir
    await p.close()
    old = Spool(tmp_path, slot=int(slot.name.split("-")[1]))
    old.append([dumps(make_event(i)) for i in range(300)])
    old.close()
    p2 = await started(clickhouse, tmp_path)
    assert p2.depth() == 300
    await put_all(p2, [make_event(i) for i in range(300, 500)])
    await p2.flush()
    assert await stored(clickhouse) == (500, 500)
    await p2.close()


async def test_close_drains(clickhouse: Any, tmp_path: Path) -> None:
    p = await started(clickhouse, tmp_path, batch_size=10_000, flush_ms=60_000)
    await put_all(p, [make_event(i) for i in range(700)])
    await p.close()
    assert await stored(clickhouse) == (700, 700)
    p.put(make_event(9999))  # after close: refused, counted, no exception
    assert p.metrics.dropped == 1


@pytest.mark.parametrize("fsync", ["always", "never"])
async def test_fsync_policies_deliver(clickhouse: Any, tmp_path: Path, fsync: str) -> None:
    p = await started(clickhouse, tmp_path, fsync=fsync)
    await put_all(p, [make_event(i) for i in range(300)])
    await p.flush()
    assert await stored(clickhouse) == (300, 300)
    await p.close()


async def test_usage_view_counts_requests_tokens_and_cache_hits(
    clickhouse: Any, tmp_path: Path
) -> None:
    p = await started(clickhouse, tmp_path)
    await put_all(p, [make_event(i) for i in range(10)])
    await p.flush()
    from watchllm.events.clickhouse_schema import USAGE_QUERY

    rows = await clickhouse.query(USAGE_QUERY, {"project_id": "proj_0"})
    # proj_0 holds i = 0, 3, 6, 9: models alternate by parity, hits on odd i
    by_model = {r["model"]: r for r in rows}
    assert by_model["gpt-4o-mini"]["requests"] == 2 and by_model["gpt-4o-mini"]["cache_hits"] == 0
    assert by_model["claude-3-5-haiku"]["requests"] == 2
    assert by_model["claude-3-5-haiku"]["cache_hits"] == 2
    assert by_model["gpt-4o-mini"]["tokens_input"] == (40 + 0) + (40 + 6)
    assert len(by_model["gpt-4o-mini"]["latency_ms"]) == 3
    await p.close()


async def test_wait_spooled_means_on_disk(clickhouse: Any, tmp_path: Path) -> None:
    sink = FlakySink(clickhouse)
    sink.down = True  # nothing leaves the spool: what we see is the writer's work
    p = await started(sink, tmp_path, batch_size=10_000, flush_ms=60_000, drain_timeout_s=0.1)
    await put_all(p, [make_event(i) for i in range(250)])
    assert await p.wait_spooled() == 0  # none refused
    assert p.metrics.spooled == 250 and p.spool.pending_events == 250
    await p.close()
