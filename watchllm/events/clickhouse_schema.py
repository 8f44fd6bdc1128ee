"""ClickHouse DDL, rendered from the one schema source (`watchllm/events/schema.py`).

Raw tables are ReplacingMergeTree ordered by (project_id, timestamp, event_id): an event
delivered twice (the pipeline is at-least-once) collapses into one row at merge time, and
`FINAL` hides the duplicates before then. They are partitioned by month and expire after
a configurable TTL. `usage_hourly` is filled by a materialized view on `events`: requests,
errors, cache hits, tokens, cost, the latency sum and count (exact averages) and latency
quantiles per project, model and hour. Every table keeps the last 1000 insert blocks'
hashes (`non_replicated_deduplication_window`), so an insert repeating a deduplication
token is dropped (the pipeline's crash-safe re-sends, see batches.py).

`deploy/clickhouse/schema.sql` is this module's output at the default TTL
(`python -m watchllm.events.clickhouse_schema > deploy/clickhouse/schema.sql`); a test
keeps it in sync. `watchllm migrate` runs `apply_schema`, which also brings an older
`usage_hourly` up to date (`ensure_schema`: add columns, switch the view's query, backfill).

Inserts (`insert_select`): the RowBinary is parsed with every `LowCardinality(T)` read as
plain `T` and the engine converts whole columns, `INSERT INTO t (...) SETTINGS ... SELECT *
FROM input('<plain structure>')` (a server, over HTTP) or `FROM file(path, 'RowBinary',
'<plain structure>')` (chDB). Parsing LowCardinality row by row is what made chDB's insert
slow: 2-4x faster this way, same bytes, same rows stored (docs/core.md).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from watchllm.events.schema import TABLES

if TYPE_CHECKING:
    from watchllm.settings import Settings

DEFAULT_TTL_DAYS = 90
# The levels are part of the state's type but not of its content (a reservoir sample of
# up to 8,192 values): reading with other levels works (`quantilesMerge(0.5, 0.95, 0.99)`).
# Measured on 10M events (bench/analytics): merging 30 days of these states ~80 ms,
# quantilesTDigest ~76 ms, quantilesDD ~61 ms, quantilesBFloat16 ~71 ms, and the reservoir
# states are the smallest on disk (0.4 MiB vs 1.3-2.2 MiB): not worth approximating
# hours of < 8,192 calls, which this sample answers exactly.
QUANTILES = "0.5, 0.9, 0.99"
ORDER_BY = "(project_id, timestamp, event_id)"
# Every merge into a wide part (>= 10 MB uncompressed) is vertical: ReplacingMergeTree's
# horizontal merge copies every column row by row to spot duplicates, the vertical one
# does that for the order key only and gathers the other columns in runs (the default
# engages only at 131,072 rows; smaller merges into compact parts stay horizontal).
# One merge of 20 parts of 6,500 events: 2.5-2.6 µs CPU a row against 4.9-5.7; at 6,500
# events/s over 120 s, the engine's merges 4.5-4.7 µs an event against 6.3-6.8
# (bench/pipeline/merges.py, docs/pipeline.md).
VERTICAL = ("vertical_merge_algorithm_min_rows_to_activate = 1, "
            "vertical_merge_algorithm_min_columns_to_activate = 1")
RAW_SETTINGS = f"non_replicated_deduplication_window = 1000, {VERTICAL}"
# Fewer, wider merges: the merge selector waits for a range worth 8x its largest part
# (default 5). Over the same 120 s, rows rewritten by merges 2.0-2.4x the rows inserted
# instead of 2.6x, merge CPU 3.4-4.5 µs an event; the price is more parts alive, which
# every query opens (6.3-6.5 on average instead of 4.0-4.2, at most 11-12 instead of
# 7-8). Not in the DDL: ClickHouse 24.8 does not know the setting, so `ensure_schema`
# sets it where the engine lists it, on raw tables that have no value of their own.
MERGE_TUNING: Mapping[str, int] = {"merge_selector_base": 8}


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
        + f"SETTINGS {RAW_SETTINGS}"
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
    `latency_ms` AggregateFunction(quantiles({QUANTILES}), Float32),
    `latency_ms_sum` SimpleAggregateFunction(sum, Float64),
    `latency_ms_count` SimpleAggregateFunction(sum, UInt64)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(hour)
ORDER BY (project_id, model, hour)
SETTINGS non_replicated_deduplication_window = 1000"""

USAGE_HOURLY_MV_QUERY = f"""SELECT
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
    quantilesState({QUANTILES})(latency_ms) AS latency_ms,
    sum(toFloat64(events.latency_ms)) AS latency_ms_sum,
    count() AS latency_ms_count
FROM events
WHERE event_type IN ('prompt_call', 'error')
GROUP BY project_id, model, hour"""
USAGE_HOURLY_MV = ("CREATE MATERIALIZED VIEW IF NOT EXISTS usage_hourly_mv TO usage_hourly\n"
                   f"AS {USAGE_HOURLY_MV_QUERY}")
# Columns added to usage_hourly since its first release (an older table gets them with
# ALTER; their values for rows written before come from the backfill, see `_upgrade_usage`).
USAGE_ADDED = (
    ("latency_ms_sum", "SimpleAggregateFunction(sum, Float64)"),
    ("latency_ms_count", "SimpleAggregateFunction(sum, UInt64)"),
)
BACKFILL_MARK = "watchllm:latency-backfill-before="

# Reading the view: sums over the partial rows, quantilesMerge for the latency state.
USAGE_QUERY = f"""SELECT project_id, model, hour, sum(requests) AS requests,
    sum(errors) AS errors, sum(cache_hits) AS cache_hits,
    sum(tokens_input) AS tokens_input, sum(tokens_output) AS tokens_output,
    sum(cost_usd) AS cost_usd, quantilesMerge({QUANTILES})(latency_ms) AS latency_ms,
    sum(latency_ms_sum) / sum(latency_ms_count) AS latency_ms_avg
FROM usage_hourly
WHERE project_id = {{project_id:String}}
GROUP BY project_id, model, hour
ORDER BY hour, model"""


def plain_type(type_: str) -> str:
    """`type_` with every `LowCardinality(...)` wrapper removed, at any depth
    (`Map(LowCardinality(String), Array(LowCardinality(String)))` -> `Map(String,
    Array(String))`); quoted text (Enum labels, time zones) is left alone."""
    out: list[str] = []
    closers: list[bool] = []  # per open parenthesis: is it a dropped wrapper's?
    i, n, quoted = 0, len(type_), False
    while i < n:
        ch = type_[i]
        if quoted:
            out.append(ch)
            if ch == "\\" and i + 1 < n:
                out.append(type_[i + 1])
                i += 1
            elif ch == "'":
                quoted = False
        elif ch == "'":
            quoted = True
            out.append(ch)
        elif type_.startswith("LowCardinality(", i):
            closers.append(True)
            i += len("LowCardinality(")
            continue
        elif ch == "(":
            closers.append(False)
            out.append(ch)
        elif ch == ")":
            if not (closers and closers.pop()):
                out.append(ch)
        else:
            out.append(ch)
        i += 1
    return "".join(out)


def sql_string(text: str) -> str:
    """A ClickHouse string literal."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def input_structure(columns: Sequence[tuple[str, str]]) -> str:
    """The structure argument of `input()` / `file()`: the columns with plain types."""
    return ", ".join(f"`{c}` {plain_type(t)}" for c, t in columns)


def insert_select(table: str, columns: Sequence[tuple[str, str]], source: str,
                  settings: Mapping[str, Any]) -> str:
    """`INSERT INTO table (columns) SETTINGS ... SELECT * FROM source`; `source` is
    `input_source(...)` or `file_source(...)`. Settings (the deduplication token among
    them) are part of the statement, the same on every transport."""
    names = ", ".join(f"`{c}`" for c, _ in columns)
    sets = ", ".join(f"{k} = {sql_string(v) if isinstance(v, str) else int(v)}"
                     for k, v in settings.items())
    return (f"INSERT INTO {table} ({names})" + (f" SETTINGS {sets}" if sets else "")
            + f" SELECT * FROM {source}")


def input_source(columns: Sequence[tuple[str, str]]) -> str:
    """Rows sent with the statement (HTTP body; the statement ends `FORMAT RowBinary`)."""
    return f"input({sql_string(input_structure(columns))})"


def file_source(path: str, columns: Sequence[tuple[str, str]]) -> str:
    """Rows in a local file (chDB: the engine runs in this process)."""
    return f"file({sql_string(path)}, 'RowBinary', {sql_string(input_structure(columns))})"


def statements(ttl_days: int = DEFAULT_TTL_DAYS) -> list[str]:
    """Every statement, in order; each is idempotent (IF NOT EXISTS)."""
    raw = [raw_table(name, cols, ttl_days) for name, cols in TABLES.items()]
    return [*raw, USAGE_HOURLY, USAGE_HOURLY_MV]


def render(ttl_days: int = DEFAULT_TTL_DAYS) -> str:
    head = (
        "-- WatchLLM ClickHouse schema. Generated from watchllm/events/schema.py by\n"
        "-- watchllm/events/clickhouse_schema.py; edit those, then `make migrations`.\n"
        f"-- Raw events expire after {ttl_days} days (WATCHLLM_EVENT_TTL_DAYS).\n"
        "-- `watchllm migrate` also sets, on the raw tables, where the server knows it: "
        + ", ".join(f"{k} = {v}" for k, v in MERGE_TUNING.items()) + ".\n\n"
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
    """Create what is missing, bring an older `usage_hourly` up to date, the raw tables'
    merge settings (`VERTICAL`, `MERGE_TUNING`; a value set by hand stays) and their TTL
    to `ttl_days`; return the changes. Safe to run again (and after a crash)."""
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
        if q is not None and " vertical_merge_algorithm_min_rows_to_activate = " not in q:
            await analytics.command(f"ALTER TABLE {name} MODIFY SETTING {VERTICAL}")
            done.append(f"{name}: vertical merges")  # created before them
        if q is None or (ttl and f"TTL {ttl}" in q) or (not ttl and " TTL " not in q):
            continue
        change = f"MODIFY TTL {ttl}" if ttl else "REMOVE TTL"
        await analytics.command(f"ALTER TABLE {name} {change}")
        done.append(f"{name}: TTL {ttl_days or 'off'}")
    if "usage_hourly" in existing:
        done += await _upgrade_usage(analytics, existing)
    return done + await _tune_merges(analytics)


async def _tune_merges(analytics: Any) -> list[str]:
    """`MERGE_TUNING` on the raw tables: each setting this engine knows, on each table
    that has no value for it (one set by hand stays)."""
    known = {r["name"] for r in await analytics.query(
        "SELECT name FROM system.merge_tree_settings WHERE name IN {names:Array(String)}",
        {"names": list(MERGE_TUNING)})}
    tables = {r["name"]: r["q"] for r in await analytics.query(
        "SELECT name, create_table_query AS q FROM system.tables "
        "WHERE database = currentDatabase() AND name IN {names:Array(String)}",
        {"names": list(TABLES)})}
    done = []
    for name, q in sorted(tables.items()):
        todo = [f"{k} = {v}" for k, v in MERGE_TUNING.items() if k in known and f" {k} = " not in q]
        if todo:
            await analytics.command(f"ALTER TABLE {name} MODIFY SETTING {', '.join(todo)}")
            done.append(f"{name}: {', '.join(todo)}")
    return done


async def _upgrade_usage(analytics: Any, existing: dict[str, str]) -> list[str]:
    """An older usage_hourly (no latency sum): add the columns, switch the view's query
    (ALTER ... MODIFY QUERY: inserts after it fill them, none is missed or counted twice),
    then backfill the sums of the hours before the switch from raw events.

    The backfill covers events with a timestamp before the start of the hour of the switch
    (recorded in the table's comment first, so a rerun after a crash resumes it); it is
    inserted with a deduplication token, so running it twice adds it once. Averages then
    are exact for every hour whose raw events still exist (TTL), except the hour of the
    switch, whose average covers the calls inserted after it: `latency_ms_count` counts
    what each sum covers, so no hour's average is diluted by calls without a sum."""
    from watchllm.env.selfhosted.clickhouse import dedup_settings

    done: list[str] = []
    have = {r["name"] for r in await analytics.query(
        "SELECT name FROM system.columns WHERE database = currentDatabase() "
        "AND table = 'usage_hourly'")}
    for name, type_ in USAGE_ADDED:
        if name not in have:
            await analytics.command(
                f"ALTER TABLE usage_hourly ADD COLUMN IF NOT EXISTS `{name}` {type_}")
            done.append(f"usage_hourly: added {name}")
    view = existing.get("usage_hourly_mv", "")
    if view and "latency_ms_sum" not in view:
        hour = (await analytics.query(
            "SELECT toUnixTimestamp(toStartOfHour(now('UTC'))) AS h"))[0]["h"]
        await analytics.command(f"ALTER TABLE usage_hourly MODIFY COMMENT '{BACKFILL_MARK}{hour}'")
        await analytics.command(f"ALTER TABLE usage_hourly_mv MODIFY QUERY {USAGE_HOURLY_MV_QUERY}")
        done.append("usage_hourly_mv: query updated")
    comment = (await analytics.query(
        "SELECT comment FROM system.tables WHERE database = currentDatabase() "
        "AND name = 'usage_hourly'"))[0]["comment"]
    if comment.startswith(BACKFILL_MARK) and comment[len(BACKFILL_MARK):].isdigit():
        before = int(comment[len(BACKFILL_MARK):])
        await analytics.command(
            "INSERT INTO usage_hourly (project_id, model, hour, latency_ms_sum, latency_ms_count) "
            "SELECT project_id, model, toStartOfHour(toDateTime(timestamp, 'UTC')) AS hour, "
            "sum(toFloat64(latency_ms)), count() FROM events "
            "WHERE event_type IN ('prompt_call', 'error') "
            f"AND timestamp < toDateTime({before}, 'UTC') "
            "GROUP BY project_id, model, hour",
            settings=dedup_settings(f"watchllm-latency-backfill-{before}"))
        await analytics.command("ALTER TABLE usage_hourly MODIFY COMMENT ''")
        done.append(f"usage_hourly: latency sums backfilled before {before}")
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
