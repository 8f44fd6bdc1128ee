"""`ensure_schema` (what `watchllm migrate` and start-up run) brings a usage_hourly of the
first release (no latency sum) up to date: the columns, the view's query, a backfill of
the sums from raw events; safe to rerun, also after a crash mid-backfill."""

from __future__ import annotations

from typing import Any

from tests.conftest import fresh_clickhouse
from tests.pipeline.helpers import make_event
from watchllm import core
from watchllm.analytics import queries
from watchllm.events.clickhouse_schema import BACKFILL_MARK, RAW_SETTINGS, ensure_schema, raw_table
from watchllm.events.schema import TABLES
from watchllm.events.validation import now_ms

HOUR = 3_600_000
V1_USAGE = """CREATE TABLE usage_hourly (`project_id` LowCardinality(String),
    `model` LowCardinality(String), `hour` DateTime('UTC'),
    `requests` SimpleAggregateFunction(sum, UInt64), `errors` SimpleAggregateFunction(sum, UInt64),
    `cache_hits` SimpleAggregateFunction(sum, UInt64),
    `tokens_input` SimpleAggregateFunction(sum, UInt64),
    `tokens_output` SimpleAggregateFunction(sum, UInt64),
    `tokens_cached` SimpleAggregateFunction(sum, UInt64),
    `cost_usd` SimpleAggregateFunction(sum, Float64),
    `cost_saved_usd` SimpleAggregateFunction(sum, Float64),
    `latency_ms` AggregateFunction(quantiles(0.5, 0.9, 0.99), Float32))
ENGINE = AggregatingMergeTree PARTITION BY toYYYYMM(hour) ORDER BY (project_id, model, hour)
SETTINGS non_replicated_deduplication_window = 1000"""
V1_VIEW = """CREATE MATERIALIZED VIEW usage_hourly_mv TO usage_hourly AS SELECT project_id, model,
    toStartOfHour(toDateTime(timestamp, 'UTC')) AS hour, count() AS requests,
    countIf(event_type = 'error' OR status = 'error') AS errors,
    countIf(cache_status IN ('HIT', 'SEMANTIC_HIT')) AS cache_hits,
    sum(toUInt64(tokens_input)) AS tokens_input, sum(toUInt64(tokens_output)) AS tokens_output,
    sum(toUInt64(tokens_cached)) AS tokens_cached, sum(cost_estimate_usd) AS cost_usd,
    sum(cost_saved_usd) AS cost_saved_usd, quantilesState(0.5, 0.9, 0.99)(latency_ms) AS latency_ms
FROM events WHERE event_type IN ('prompt_call', 'error') GROUP BY project_id, model, hour"""


async def insert(ch: Any, events: list[dict[str, Any]]) -> None:
    cols = list(TABLES["events"])
    await ch.insert_rowbinary("events", [c for c, _ in cols], core.encode_rowbinary(cols, events))


def at(i: int, ts: int, latency: float) -> dict[str, Any]:
    return {**make_event(i, run="u"), "project_id": "p", "timestamp": ts, "latency_ms": latency}


async def test_first_release_usage_view_is_upgraded_and_backfilled(chdb_url: str) -> None:
    ch = await fresh_clickhouse(chdb_url, schema=False)
    try:
        for name, cols in TABLES.items():
            await ch.command(raw_table(name, cols, 0))
        await ch.command(V1_USAGE)
        await ch.command(V1_VIEW)
        start = (now_ms() // HOUR - 3) * HOUR
        old = [at(i, start + i * 60_000, 100.0 + i) for i in range(100)]  # hours -3 and -2
        await insert(ch, old)

        done = await ensure_schema(ch, 0)
        assert done[:3] == ["usage_hourly: added latency_ms_sum",
                            "usage_hourly: added latency_ms_count",
                            "usage_hourly_mv: query updated"]
        assert done[3].startswith("usage_hourly: latency sums backfilled before ")
        late = [at(1000 + i, start + HOUR + i, 500.0) for i in range(10)]  # after the switch
        await insert(ch, late)

        async def avg() -> tuple[int, float]:
            s = await queries.stats(ch, "p", start, start + 3 * HOUR)  # whole hours: view only
            return s["requests"], s["latency_ms"]["avg"]

        expected = (110, (sum(e["latency_ms"] for e in old) + 5000.0) / 110)
        assert await avg() == expected
        assert await ensure_schema(ch, 0) == []  # up to date: nothing to do

        # A crash after the backfill's insert, before its mark was cleared: the rerun
        # repeats the insert with the same deduplication token, which adds nothing.
        before = done[3].rsplit(" ", 1)[1]
        await ch.command(f"ALTER TABLE usage_hourly MODIFY COMMENT '{BACKFILL_MARK}{before}'")
        assert await ensure_schema(ch, 0) == [done[3]]
        assert await avg() == expected
    finally:
        await ch.command(f"DROP DATABASE IF EXISTS {ch.database}")
        await ch.close()


async def test_older_raw_tables_get_the_merge_settings_and_a_merge_keeps_every_row(
        chdb_url: str) -> None:
    ch = await fresh_clickhouse(chdb_url, schema=False)
    try:
        for name, cols in TABLES.items():  # as created before RAW_SETTINGS
            await ch.command(raw_table(name, cols, 0).replace(
                RAW_SETTINGS, "non_replicated_deduplication_window = 1000"))
        done = await ensure_schema(ch, 0)
        assert [d for d in done if d.endswith("vertical merges")] == [
            f"{name}: vertical merges" for name in TABLES]
        assert done[-len(TABLES):] == [f"{name}: merge_selector_base = 8"
                                       for name in sorted(TABLES)]
        tables = await ch.query("SELECT name, create_table_query AS q FROM system.tables "
                                "WHERE database = currentDatabase()")
        assert all(setting in t["q"] for t in tables if t["name"] in TABLES
                   for setting in [*RAW_SETTINGS.split(", "), "merge_selector_base = 8"])
        assert await ensure_schema(ch, 0) == []
        # A value set by hand is the operator's: migrate leaves it.
        await ch.command("ALTER TABLE events MODIFY SETTING merge_selector_base = 3, "
                         "vertical_merge_algorithm_min_rows_to_activate = 50000")
        assert await ensure_schema(ch, 0) == []
        q = (await ch.query("SELECT create_table_query AS q FROM system.tables WHERE "
                            "database = currentDatabase() AND name = 'events'"))[0]["q"]
        assert "merge_selector_base = 3" in q
        assert "vertical_merge_algorithm_min_rows_to_activate = 50000" in q
        await ch.command("ALTER TABLE events MODIFY SETTING merge_selector_base = 8, "
                         "vertical_merge_algorithm_min_rows_to_activate = 1")

        # Wide parts from the first byte, so the merge below is a vertical one: rows
        # delivered twice collapse and every column of every row comes through it.
        await ch.command("ALTER TABLE events MODIFY SETTING min_bytes_for_wide_part = 0")
        first = [{**make_event(i, run="v"), "metadata": {"i": str(i)}} for i in range(300)]
        second = [{**e, "response": f"again {e['event_id']}"} for e in first[::3]]
        await insert(ch, first)
        await insert(ch, second)
        await insert(ch, [make_event(i, run="w") for i in range(300, 400)])
        rows = "SELECT * FROM events FINAL ORDER BY event_id"
        before = await ch.query(rows)
        await ch.command("OPTIMIZE TABLE events FINAL")
        parts = await ch.query("SELECT part_type, rows FROM system.parts WHERE database = "
                               "currentDatabase() AND table = 'events' AND active")
        assert parts == [{"part_type": "Wide", "rows": 400}]
        assert await ch.query("SELECT * FROM events ORDER BY event_id") == before
        assert len(before) == 400
    finally:
        await ch.command(f"DROP DATABASE IF EXISTS {ch.database}")
        await ch.close()


async def test_a_merge_setting_the_engine_does_not_know_is_left_out(
        chdb_url: str, monkeypatch: Any) -> None:
    # ClickHouse 24.8 has no merge_selector_base: migrate must still succeed there.
    from watchllm.events import clickhouse_schema

    monkeypatch.setattr(clickhouse_schema, "MERGE_TUNING",
                        {"merge_selector_base_of_a_later_release": 9, "merge_selector_base": 8})
    ch = await fresh_clickhouse(chdb_url)
    try:
        q = (await ch.query("SELECT create_table_query AS q FROM system.tables WHERE "
                            "database = currentDatabase() AND name = 'events'"))[0]["q"]
        assert "merge_selector_base = 8" in q and "of_a_later_release" not in q
    finally:
        await ch.command(f"DROP DATABASE IF EXISTS {ch.database}")
        await ch.close()
