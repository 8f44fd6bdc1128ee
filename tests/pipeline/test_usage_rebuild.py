"""`watchllm rebuild-usage`: a `usage_hourly` that lost a batch (the rare kill -9 case in
docs/pipeline.md) or counted a redelivery twice is rebuilt from `events FINAL`, exactly,
and hours outside the window are left alone."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Any

import pytest

from tests.pipeline.helpers import make_event
from watchllm import core
from watchllm.events.schema import TABLES
from watchllm.events.usage_rebuild import rebuild_usage

NAMES = [c for c, _ in TABLES["events"]]
HOUR_MS = 3_600_000


def batch(first: int, n: int, shift_ms: int = 0) -> bytes:
    events = []
    for i in range(first, first + n):
        ev = make_event(i, run="rb")
        ev["timestamp"] -= shift_ms
        events.append(ev)
    return core.encode_rowbinary(list(TABLES["events"]), events)


async def per_group(ch: Any, sql: str) -> dict[tuple[str, str, int], tuple[int, int, float]]:
    rows = await ch.query(sql)
    return {(r["project_id"], r["model"], int(r["h"])): (int(r["requests"]), int(r["tokens"]),
                                                         round(float(r["latency"]), 6))
            for r in rows}


VIEW = ("SELECT project_id, model, toUnixTimestamp(hour) AS h, sum(requests) AS requests, "
        "sum(tokens_input) AS tokens, sum(latency_ms_sum) / sum(latency_ms_count) AS latency "
        "FROM usage_hourly GROUP BY project_id, model, hour")
RAW = ("SELECT project_id, model, toUnixTimestamp(toStartOfHour(toDateTime(timestamp, 'UTC')))"
       " AS h, count() AS requests, sum(tokens_input) AS tokens, avg(latency_ms) AS latency "
       "FROM events FINAL GROUP BY project_id, model, h")


async def test_rebuild_restores_a_lost_batch_and_drops_a_double_count(clickhouse: Any) -> None:
    await clickhouse.insert_rowbinary("events", NAMES, batch(0, 600), "t-now")
    await clickhouse.insert_rowbinary("events", NAMES, batch(600, 400, HOUR_MS), "t-hour-ago")
    assert await per_group(clickhouse, VIEW) == await per_group(clickhouse, RAW)
    # An old hour the raw events no longer cover: the rebuild must not touch it.
    old = int(time.time()) // 3600 * 3600 - 30 * 86400
    await clickhouse.command(
        "INSERT INTO usage_hourly (project_id, model, hour, requests) "
        f"VALUES ('proj_old', 'm', toDateTime({old}, 'UTC'), 7)")

    # The view loses the hour-ago batch (a kill between its token and its part), and a
    # redelivery past the deduplication window is counted twice in it (FINAL hides it
    # in the raw table).
    last_hour = (int(time.time()) - 3600) // 3600 * 3600
    await clickhouse.command(
        f"ALTER TABLE usage_hourly DELETE WHERE hour = toDateTime({last_hour}, 'UTC')",
        settings={"mutations_sync": 2})
    await clickhouse.insert_rowbinary("events", NAMES, batch(0, 600), "t-now-again")
    assert await per_group(clickhouse, VIEW) != await per_group(clickhouse, RAW)

    report = await rebuild_usage(clickhouse, hours=24, ttl_days=90)
    assert "1000 requests" in report
    view, raw = await per_group(clickhouse, VIEW), await per_group(clickhouse, RAW)
    assert view.pop(("proj_old", "m", old)) == (7, 0, pytest.approx(float("nan"), nan_ok=True))
    assert view == raw
    assert sum(r[0] for r in raw.values()) == 1000

    # Running it again changes nothing.
    await rebuild_usage(clickhouse, hours=24, ttl_days=90)
    again = await per_group(clickhouse, VIEW)
    again.pop(("proj_old", "m", old))
    assert again == raw


async def test_the_ttl_edge_hour_is_left_alone(clickhouse: Any) -> None:
    # With a 1-day TTL the window starts after the hour the TTL is cutting into, however
    # many hours are asked for: that hour's expired events cannot be recomputed.
    edge = (int(time.time()) - 86400) // 3600 * 3600
    await clickhouse.insert_rowbinary("events", NAMES, batch(0, 10, 86_400_000 - 60_000), "t")
    await clickhouse.command(
        "INSERT INTO usage_hourly (project_id, model, hour, requests) "
        f"VALUES ('p', 'm', toDateTime({edge}, 'UTC'), 5)")
    edge_sql = f"SELECT sum(requests) AS n FROM usage_hourly WHERE hour = toDateTime({edge}, 'UTC')"
    before = int((await clickhouse.query(edge_sql))[0]["n"])
    assert before >= 5  # the extra row, and the raw events' own when they fell in that hour
    await rebuild_usage(clickhouse, hours=48, ttl_days=1)
    assert int((await clickhouse.query(edge_sql))[0]["n"]) == before  # untouched


async def test_hours_before_the_oldest_raw_event_are_left_alone(clickhouse: Any) -> None:
    # A view row 3 hours back with no raw events behind it (deleted by hand, or a shorter
    # TTL once): nothing to rebuild it from, so it stays, even with no TTL configured.
    three_back = (int(time.time()) - 3 * 3600) // 3600 * 3600
    await clickhouse.command(
        "INSERT INTO usage_hourly (project_id, model, hour, requests) "
        f"VALUES ('p', 'm', toDateTime({three_back}, 'UTC'), 9)")
    assert "no raw events" in await rebuild_usage(clickhouse, hours=24)
    await clickhouse.insert_rowbinary("events", NAMES, batch(0, 10), "t-now")
    await rebuild_usage(clickhouse, hours=24)
    rows = await clickhouse.query("SELECT sum(requests) AS n FROM usage_hourly "
                                  f"WHERE hour = toDateTime({three_back}, 'UTC')")
    assert int(rows[0]["n"]) == 9


async def test_hours_must_be_positive(clickhouse: Any) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        await rebuild_usage(clickhouse, hours=0)


def test_cli(tmp_path: Any) -> None:
    """`watchllm rebuild-usage` on the embedded default: a report, or a clear refusal. (A
    child process: chDB opens one data directory per process, and this one has its own.)"""
    env = {k: v for k, v in os.environ.items()
           if k not in ("WATCHLLM_DATABASE_URL", "WATCHLLM_MODE", "WATCHLLM_CLICKHOUSE_URL")}
    env["WATCHLLM_DATA_DIR"] = str(tmp_path)

    def watchllm(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "watchllm.entrypoints.cli", *argv],
                              env=env, capture_output=True, text=True, timeout=120)

    assert watchllm("migrate").returncode == 0
    done = watchllm("rebuild-usage", "--hours", "2")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage_hourly: ")
    refused = watchllm("rebuild-usage", "--hours", "0")
    assert refused.returncode == 2
    assert "at least 1" in refused.stderr
