"""Load synthetic events into a chDB directory for the analytics benchmark.

    .venv/bin/python bench/analytics/load.py --dir /tmp/wl-bench --events 10000000

Rows are generated inside the engine (INSERT ... SELECT FROM numbers()), so loading 10M
events takes about a minute instead of the Python encoder's ~10. The schema is the real
one (watchllm/events/clickhouse_schema.py), so the usage_hourly materialized view fills
exactly as it does in production. Shape: 30 days, 90% of events in project `proj_bench`
(the one the benchmark queries), the rest spread over 9 other projects; 8 models; ~80%
prompt_call, then tool_call, agent_step, error; runs of 20 events.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from watchllm.env.selfhosted.clickhouse import ClickHouseAnalytics
from watchllm.events.clickhouse_schema import ensure_schema

DAY_MS = 86_400_000

EVENTS_SQL = """INSERT INTO events (event_id, event_type, project_id, timestamp, run_id, user_id,
    tags, env, client_sdk_version, client_platform, endpoint, prompt, response, model,
    provider, tokens_input, tokens_output, tokens_cached, cost_estimate_usd, cost_saved_usd,
    latency_ms, status, http_status, cache_status, request_id, error_type, error_message,
    metadata, properties)
SELECT
    concat('ev-', leftPad(toString(number), 10, '0')) AS event_id,
    multiIf(number % 20 < 16, 'prompt_call', number % 20 < 18, 'tool_call',
            number % 20 < 19, 'agent_step', 'error') AS event_type,
    if(number % 10 = 9, concat('proj_', toString(intDiv(number, 10) % 9)), 'proj_bench'),
    fromUnixTimestamp64Milli(toInt64({start:Int64} + intDiv(number * {span:Int64}, {n:Int64})),
                             'UTC') AS timestamp,
    concat('run-', toString(intDiv(number, 20))) AS run_id,
    concat('user-', toString(number % 1000)) AS user_id,
    ['bench', if(number % 2 = 0, 'even', 'odd')] AS tags,
    'production' AS env, 'python/0.1.0' AS client_sdk_version, 'linux' AS client_platform,
    'chat/completions' AS endpoint,
    concat('Question number ', toString(number), ': summarise the quarterly report') AS prompt,
    concat('Answer ', toString(number)) AS response,
    ['gpt-4o-mini', 'gpt-4o', 'claude-3-5-haiku', 'claude-3-5-sonnet', 'gemini-1.5-flash',
     'llama-3.1-70b', 'mistral-large', 'o1-mini'][number % 8 + 1] AS model,
    ['openai', 'openai', 'anthropic', 'anthropic', 'google', 'groq', 'mistral',
     'openai'][number % 8 + 1] AS provider,
    toUInt32(100 + number % 900) AS tokens_input,
    toUInt32(20 + number % 300) AS tokens_output,
    toUInt32(if(number % 7 = 0, 50, 0)) AS tokens_cached,
    (100 + number % 900) * 0.00000015 + (20 + number % 300) * 0.0000006 AS cost_estimate_usd,
    if(number % 5 = 0, 0.0001, 0.0) AS cost_saved_usd,
    toFloat32(50 + (number * 7919) % 2000) AS latency_ms,
    if(number % 20 = 19 OR number % 33 = 0, 'error', 'success') AS status,
    toUInt16(if(number % 20 = 19 OR number % 33 = 0, 500, 200)) AS http_status,
    ['NONE', 'MISS', 'HIT', 'SEMANTIC_HIT', 'MISS'][number % 5 + 1] AS cache_status,
    concat('req-', toString(number)) AS request_id,
    if(number % 20 = 19, 'upstream_error', '') AS error_type,
    if(number % 20 = 19, 'provider answered 500', '') AS error_message,
    map('team', if(number % 3 = 0, 'search', 'support')) AS metadata,
    '' AS properties
FROM numbers({offset:UInt64}, {count:UInt64})"""


async def load(directory: str, n: int, chunk: int) -> None:
    ch = ClickHouseAnalytics(f"chdb://{directory}")
    await ensure_schema(ch, 0)
    existing = (await ch.query("SELECT count() AS c FROM events"))[0]["c"]
    if existing >= n:
        print(f"{directory}: already holds {existing} events")
        await ch.close()
        return
    start = int(time.time() * 1000) - 30 * DAY_MS
    t0 = time.perf_counter()
    for offset in range(existing, n, chunk):
        count = min(chunk, n - offset)
        await ch.query(EVENTS_SQL, {"start": start, "span": 30 * DAY_MS, "n": n,
                                    "offset": offset, "count": count})
        print(f"  {offset + count:>11,} events  {time.perf_counter() - t0:6.1f} s", flush=True)
    await ch.command("OPTIMIZE TABLE usage_hourly FINAL")
    rows = await ch.query("SELECT count() AS c FROM events")
    print(f"loaded {rows[0]['c']:,} events in {time.perf_counter() - t0:.1f} s ({directory})")
    await ch.close()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--dir", default="/tmp/watchllm-bench-analytics")
    p.add_argument("--events", type=int, default=10_000_000)
    p.add_argument("--chunk", type=int, default=1_000_000)
    a = p.parse_args()
    Path(a.dir).mkdir(parents=True, exist_ok=True)
    asyncio.run(load(a.dir, a.events, a.chunk))


if __name__ == "__main__":
    main()
