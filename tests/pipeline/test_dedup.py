"""Exactly-once into the materialized views: a batch re-sent after a crash between its
insert and its ack repeats its deduplication token and is dropped, in `events` and in
`usage_hourly` (raw counts here are without FINAL: nothing is left to collapse)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from tests.conftest import eventually
from tests.pipeline.helpers import make_event
from watchllm import core
from watchllm.events.batches import BatchBuilder, dumps
from watchllm.events.pipeline import EventPipeline, default_route
from watchllm.events.schema import TABLES

NAMES = [c for c, _ in TABLES["events"]]


async def counts(ch: Any) -> tuple[int, int, int]:
    """(raw rows, distinct event ids, requests in the view)."""
    row = (await ch.query(
        "SELECT (SELECT count() FROM events) AS raw, (SELECT uniqExact(event_id) FROM events)"
        " AS ids, (SELECT sum(requests) FROM usage_hourly) AS view"))[0]
    return int(row["raw"]), int(row["ids"]), int(row["view"] or 0)


async def test_same_batch_same_token_is_counted_once_in_table_and_view(clickhouse: Any) -> None:
    data = core.encode_rowbinary(list(TABLES["events"]), [make_event(i) for i in range(300)])
    for _ in range(2):  # sent, then re-sent after a (simulated) crash
        await clickhouse.insert_rowbinary("events", NAMES, data, dedup_token="wl1:s:1.0+300")
    assert await counts(clickhouse) == (300, 300, 300)
    await clickhouse.insert_rowbinary("events", NAMES, data, dedup_token="wl1:s:1.300+300")
    assert await counts(clickhouse) == (600, 300, 600)  # another token: not a re-send


class DiesAfterInsert:
    """Inserts, then never returns while `armed` (the process 'dies' before the ack)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.armed = True
        self.inserted = 0

    async def insert_rowbinary(self, table: str, columns: Any, data: bytes,
                               dedup_token: str | None = None) -> None:
        await self.inner.insert_rowbinary(table, columns, data, dedup_token)
        self.inserted += 1
        if self.armed:
            await asyncio.Event().wait()

    async def query(self, sql: str, params: Any = None) -> Any:
        return await self.inner.query(sql, params)

    async def close(self) -> None:
        return None


async def test_batch_in_flight_at_a_crash_is_replayed_as_it_was(
    clickhouse: Any, tmp_path: Path
) -> None:
    sink = DiesAfterInsert(clickhouse)
    first = await EventPipeline(sink, tmp_path, batch_size=400, flush_ms=10,
                                drain_timeout_s=0.2).start()
    for i in range(250):
        first.put(make_event(i))
    await eventually(lambda: sink.inserted == 1)  # inserted, not acked
    for i in range(250, 1000):  # more arrive: a fresh read would make a bigger first batch
        first.put(make_event(i))
    await first.wait_spooled()
    await first.close()  # the insert never returned: no ack, the slot is released

    second = EventPipeline(clickhouse, tmp_path, batch_size=400, flush_ms=10)
    assert second.spool.replay == (second.spool.acked, 250)  # what was in flight
    await second.start()
    await second.flush()
    await second.close()
    assert second.metrics.events_sent == 1000  # 250 re-sent, 750 new
    assert await counts(clickhouse) == (1000, 1000, 1000)


async def crash_with_a_batch_in_flight(clickhouse: Any, tmp_path: Path) -> None:
    """250 events inserted and not acked when the process 'dies'; 750 more spooled."""
    sink = DiesAfterInsert(clickhouse)
    first = await EventPipeline(sink, tmp_path, batch_size=400, flush_ms=10,
                                drain_timeout_s=0.2).start()
    for i in range(250):
        first.put(make_event(i))
    await eventually(lambda: sink.inserted == 1)
    for i in range(250, 1000):
        first.put(make_event(i))
    await first.wait_spooled()
    await first.close()


async def replay(clickhouse: Any, tmp_path: Path) -> EventPipeline:
    second = EventPipeline(clickhouse, tmp_path, batch_size=400, flush_ms=10)
    await second.start()
    await second.flush()
    await second.close()
    return second


async def test_a_view_that_lost_the_batch_in_flight_is_rebuilt_after_the_replay(
    clickhouse: Any, tmp_path: Path
) -> None:
    """The rare kill -9 case of docs/pipeline.md: the crash stopped chDB after the view had
    recorded the in-flight block's token but before its rows were kept. Simulated by
    deleting the view's rows (a mutation keeps the token log), so the replay is dropped
    by the view as a duplicate; the check after the replay rebuilds the hour."""
    await crash_with_a_batch_in_flight(clickhouse, tmp_path)
    await clickhouse.command("ALTER TABLE usage_hourly DELETE WHERE 1",
                             settings={"mutations_sync": 2})
    assert await counts(clickhouse) == (250, 250, 0)
    second = await replay(clickhouse, tmp_path)
    assert await counts(clickhouse) == (1000, 1000, 1000)
    assert second.metrics.view_hours_rebuilt >= 1
    assert second.metrics.events_reinserted == 0


async def test_raw_events_lost_the_same_way_are_inserted_again_after_the_replay(
    clickhouse: Any, tmp_path: Path
) -> None:
    """The same race on the raw table (token recorded, rows not kept): the replay is
    dropped there too, so the events it lacks are inserted again with a new token."""
    await crash_with_a_batch_in_flight(clickhouse, tmp_path)
    for table in ("events", "usage_hourly"):
        await clickhouse.command(f"ALTER TABLE {table} DELETE WHERE 1",
                                 settings={"mutations_sync": 2})
    assert await counts(clickhouse) == (0, 0, 0)
    second = await replay(clickhouse, tmp_path)
    assert second.metrics.events_reinserted == 250
    assert await counts(clickhouse) == (1000, 1000, 1000)


async def test_raw_events_lost_while_the_view_kept_them_are_not_counted_twice(
    clickhouse: Any, tmp_path: Path
) -> None:
    """The raw table lost the in-flight batch but the view kept it: re-inserting the raw
    events counts them in the view a second time, and the hour check takes that out."""
    await crash_with_a_batch_in_flight(clickhouse, tmp_path)
    await clickhouse.command("ALTER TABLE events DELETE WHERE 1",
                             settings={"mutations_sync": 2})
    assert await counts(clickhouse) == (0, 0, 250)
    second = await replay(clickhouse, tmp_path)
    assert second.metrics.events_reinserted == 250
    assert await counts(clickhouse) == (1000, 1000, 1000)


def test_hot_and_spooled_events_encode_to_the_same_bytes() -> None:
    """The token carries the data's checksum: a batch re-read from disk after a restart
    must encode exactly like the events the first process had in memory."""
    import orjson

    builder = BatchBuilder({t: list(c) for t, c in TABLES.items()}, default_route,
                           lambda items: None)
    events = [make_event(i) for i in range(50)]
    events += [{**make_event(i), "event_type": "assertion_failed", "assertion_name": "x"}
               for i in range(50, 60)]
    spooled = [orjson.loads(dumps(e)) for e in events]
    hot = builder.build("s", (1, 0), (1, 9), len(events), events)
    cold = builder.build("s", (1, 0), (1, 9), len(spooled), spooled)
    assert hot.tokens == cold.tokens and hot.encoded == cold.encoded


def test_chunked_encoding_equals_one_call_and_isolates_poison_in_any_chunk() -> None:
    from watchllm import core
    from watchllm.events.batches import ENCODE_CHUNK

    dead: list[object] = []
    builder = BatchBuilder({t: list(c) for t, c in TABLES.items()}, default_route, dead.extend)
    rows = [make_event(i) for i in range(2 * ENCODE_CHUNK + 500)]
    poison = {5, ENCODE_CHUNK + 700, 2 * ENCODE_CHUNK + 499}  # first, middle, last chunk
    for i in poison:
        rows[i] = {**rows[i], "cache_status": "NOT_AN_ENUM_LABEL"}
    kept, data = builder.encode("events", rows)
    good = [r for i, r in enumerate(rows) if i not in poison]
    assert kept == good and len(dead) == 3
    assert data == core.encode_rowbinary([tuple(c) for c in TABLES["events"]], good)
