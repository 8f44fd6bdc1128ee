"""ClickHouse DDL, rendered from the one schema source (`watchllm/events/schema.py`).

Raw tables are ReplacingMergeTree ordered by (project_id, timestamp, event_id): an event
delivered twice (the pipeline is at-least-once) collapses into one row at merge time, and
`FINAL` hides the duplicates before then. They are partitioned by month and expire after
a configurable TTL. `usage_hourly` is filled by a materialized view on `events`: requests,
errors, cache hits, tokens, cost and latency quantiles per project, model and hour.

`deploy/clickhouse/schema.sql` is this module's output at the default TTL
(`python -m watchllm.events.clickhouse_schema > deploy/clickhouse/schema.sql`); a test
keeps it in sync. `watchllm migrate` runs `apply_schema`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from watchllm.events.schema import TABLES

if TYPE_CHECKING:
    from watchllm.settings import Settings

DEFAULT_TTL_DAYS = 90
QUANTILES = "0.5, 0.9, 0.99"
ORDER_BY = "(project_id, timestamp, event_id)"


def ttl_clause(ttl_days: int) -> str:
    return f"toDateTime(timestamp) + toIntervalDay({ttl_days})" if ttl_days > 0 else ""


def raw_table(name: str, columns: tuple[tuple[str, str], ...], ttl_days: int) -> str:
    cols = ",\n    ".join(f"`{c}` {t}" for c, t in columns)
    ttl = ttl_clause(ttl_days)
    return (
        f"CREATE TABLE IF NOT EXISTS {name}\n(\n    {cols}\n)\n"
        "ENGINE = ReplacingMergeTree\n"
        "PARTITION BY toYYYYMM(timestamp)\n"
        f"ORDER BY {ORDER_BY}\n" + (f"TTL {ttl}\n" if ttl else "")
        + "SETTINGS non_replicated_deduplication_window = 1000"
    )


USAGE_HOURLY = f"""CREATE TABLE IF NOT EXISTS usage_hourly
(
    `project_id` LowCardinality(String),
    `model` LowCardinality(String),
    `hour` DateTime('UTC'),
    `requests` SimpleAggregateFunction(sum, UInt64),
    `errors` SimpleAggregateFunction(sum, UInt64),
    `cache_hits` SimpleAggregateFunction(sum, UInt64),
    `tokens_input` SimpleAggregateFunction(sum, UInt64),
    `tokens_output` SimpleAggregateFunction(sum, UInt64),
    `tokens_cached` SimpleAggregateFunction(sum, UInt64),
    `cost_usd` SimpleAggregateFunction(sum, Float64),
    `cost_saved_usd` SimpleAggregateFunction(sum, Float64),
    `latency_ms` AggregateFunction(quantiles({QUANTILES}), Float32)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(hour)
ORDER BY (project_id, model, hour)
SETTINGS non_replicated_deduplication_window = 1000"""

USAGE_HOURLY_MV = f"""CREATE MATERIALIZED VIEW IF NOT EXISTS usage_hourly_mv TO usage_hourly
AS SELECT
    project_id,
    model,
    toStartOfHour(toDateTime(timestamp, 'UTC')) AS hour,
    count() AS requests,
    countIf(event_type = 'error' OR status = 'error') AS errors,
    countIf(cache_status IN ('HIT', 'SEMANTIC_HIT')) AS cache_hits,
    sum(toUInt64(tokens_input)) AS tokens_input,
    sum(toUInt64(tokens_output)) AS tokens_output,
    sum(toUInt64(tokens_cached)) AS tokens_cached,
    sum(cost_estimate_usd) AS cost_usd,
    sum(cost_saved_usd) AS cost_saved_usd,
    quantilesState({QUANTILES})(latency_ms) AS latency_ms
FROM events
WHERE event_type IN ('prompt_call', 'error')
GROUP BY project_id, model, hour"""

# Reading the view: sums over the partial rows, quantilesMerge for the latency state.
USAGE_QUERY = f"""SELECT project_id, model, hour, sum(requests) AS requests,
    sum(errors) AS errors, sum(cache_hits) AS cache_hits,
    sum(tokens_input) AS tokens_input, sum(tokens_output) AS tokens_output,
    sum(cost_usd) AS cost_usd, quantilesMerge({QUANTILES})(latency_ms) AS latency_ms
FROM usage_hourly
WHERE project_id = {{project_id:String}}
GROUP BY project_id, model, hour
ORDER BY hour, model"""


def statements(ttl_days: int = DEFAULT_TTL_DAYS) -> list[str]:
    """Every statement, in order; each is idempotent (IF NOT EXISTS)."""
    raw = [raw_table(name, cols, ttl_days) for name, cols in TABLES.items()]
    return [*raw, USAGE_HOURLY, USAGE_HOURLY_MV]


def render(ttl_days: int = DEFAULT_TTL_DAYS) -> str:
    head = (
        "-- WatchLLM ClickHouse schema. Generated from watchllm/events/schema.py by\n"
        "-- watchllm/events/clickhouse_schema.py; edit those, then `make migrations`.\n"
        f"-- Raw events expire after {ttl_days} days (WATCHLLM_EVENT_TTL_DAYS).\n\n"
    )
    return head + "".join(f"{s};\n\n" for s in statements(ttl_days)).rstrip("\n") + "\n"


def clickhouse_url(settings: Settings) -> str:
    """The configured ClickHouse: `off`, an http(s) URL, or chDB under the data dir."""
    url = settings.clickhouse_url
    if url:
        return url
    if settings.mode != "embedded":
        return "off"
    return f"chdb://{settings.data_dir.resolve() / 'clickhouse'}"


async def ensure_schema(analytics: object, ttl_days: int) -> list[str]:
    """Create what is missing and bring the raw tables' TTL to `ttl_days`; return changes."""
    from watchllm.env.selfhosted.clickhouse import ClickHouseAnalytics

    assert isinstance(analytics, ClickHouseAnalytics)
    existing = {r["name"]: r["q"] for r in await analytics.query(
        "SELECT name, create_table_query AS q FROM system.tables WHERE database = currentDatabase()"
    )}
    done = []
    for sql in statements(ttl_days):
        name = sql.split("EXISTS ", 1)[1].split()[0]
        if name not in existing:
            await analytics.command(sql)
            done.append(f"created {name}")
    ttl = ttl_clause(ttl_days)
    for name in TABLES:
        q = existing.get(name)
        if q is None or (ttl and f"TTL {ttl}" in q) or (not ttl and " TTL " not in q):
            continue
        change = f"MODIFY TTL {ttl}" if ttl else "REMOVE TTL"
        await analytics.command(f"ALTER TABLE {name} {change}")
        done.append(f"{name}: TTL {ttl_days or 'off'}")
    return done


async def apply_schema(settings: Settings) -> str:
    """`watchllm migrate`: apply the ClickHouse schema; returns a one-line report."""
    url = clickhouse_url(settings)
    if url == "off":
        return "clickhouse: off"
    from watchllm.env.selfhosted.clickhouse import ClickHouseAnalytics, _redact

    analytics = ClickHouseAnalytics(url)
    try:
        done = await ensure_schema(analytics, settings.event_ttl_days)
    finally:
        await analytics.close()
    return f"clickhouse ({_redact(url)}): " + ("; ".join(done) if done else "up to date")


if __name__ == "__main__":
    print(render(), end="")
