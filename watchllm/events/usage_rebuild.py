"""Recompute the `usage_hourly` rollup from the raw events: `watchllm rebuild-usage`, and
the check an embedded gateway makes after replaying the batch a crash left in flight.

The view is filled at insert time, so anything that makes it miss or repeat an insert
stays in it: a kill -9 of an embedded gateway in the instant between the view table
recording a block's deduplication token and committing the block (the replayed batch is
then dropped as a duplicate, docs/pipeline.md), or a redelivery past the deduplication
window. The raw `events` table read with `FINAL` has neither problem, so the hours it
still holds can be rebuilt from it exactly: their view rows are deleted (a synchronous
mutation) and the view's own query, over `events FINAL`, inserts them again.

Run it with the gateways stopped: an insert arriving during the rebuild could be counted
twice or not at all. Hours whose raw events have expired (TTL) are left as they are.

`repair_hours` is the automatic form, for the one case that needs it: chDB runs inside
the gateway, so a kill -9 of the gateway can interrupt ClickHouse itself mid-commit
(a ClickHouse server finishes an insert whatever happens to its client). After the
replayed batch is inserted, the pipeline (EventPipeline, through the adapter's
`repair_after_replay`) compares the view's total with `events FINAL` for each hour the
batch touched and rebuilds the hours that disagree, before shipping anything else.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from watchllm.events.clickhouse_schema import USAGE_HOURLY_MV_QUERY, clickhouse_url
from watchllm.settings import Settings

_SOURCE = "FROM events\nWHERE event_type IN ('prompt_call', 'error')"


def rebuild_query(since: int, until: int | None = None) -> str:
    """The view's query over the deduplicated raw events in [since, until) (epoch s)."""
    assert _SOURCE in USAGE_HOURLY_MV_QUERY, "the view's query changed: update this"
    window = f"timestamp >= toDateTime({int(since)}, 'UTC')"
    if until is not None:
        window += f" AND timestamp < toDateTime({int(until)}, 'UTC')"
    return "INSERT INTO usage_hourly " + USAGE_HOURLY_MV_QUERY.replace(
        _SOURCE, f"FROM events FINAL\nWHERE event_type IN ('prompt_call', 'error') AND {window}")


def _first_whole_hour(now: int, ttl_days: int) -> int:
    """The first hour (epoch s) none of whose raw events a TTL of `ttl_days` has expired."""
    expired_before = now - ttl_days * 86400
    return expired_before - expired_before % 3600 + 3600


async def _rebuild(analytics: Any, since: int, until: int | None = None) -> None:
    """Replace the view's rows of the hours in [since, until) by the view's query over
    `events FINAL` (the delete is a mutation, waited for)."""
    window = f"hour >= toDateTime({since}, 'UTC')"
    if until is not None:
        window += f" AND hour < toDateTime({until}, 'UTC')"
    await analytics.command(f"ALTER TABLE usage_hourly DELETE WHERE {window}",
                            settings={"mutations_sync": 2})
    await analytics.command(rebuild_query(since, until), settings={"insert_deduplicate": 0})


async def repair_hours(analytics: Any, hours: Iterable[int], ttl_days: int = 0) -> list[int]:
    """Rebuild each of `hours` (epoch s, hour starts) whose requests in `usage_hourly`
    differ from the calls in `events FINAL`; returns them. Hours the raw-event TTL may
    have cut into are not touched."""
    wanted = sorted({int(h) - int(h) % 3600 for h in hours})
    if ttl_days > 0:
        now = (await analytics.query("SELECT toUnixTimestamp(now('UTC')) AS now"))[0]["now"]
        first = _first_whole_hour(now, ttl_days)
        wanted = [h for h in wanted if h >= first]
    if not wanted:
        return []
    listed = ", ".join(str(h) for h in wanted)
    view = {int(r["h"]): int(r["n"]) for r in await analytics.query(
        "SELECT toUnixTimestamp(hour) AS h, sum(requests) AS n FROM usage_hourly "
        f"WHERE toUnixTimestamp(hour) IN ({listed}) GROUP BY h")}
    raw = {int(r["h"]): int(r["n"]) for r in await analytics.query(
        "SELECT toUnixTimestamp(toStartOfHour(toDateTime(timestamp, 'UTC'))) AS h, "
        "count() AS n FROM events FINAL WHERE event_type IN ('prompt_call', 'error') "
        f"AND h IN ({listed}) GROUP BY h")}
    fixed = [h for h in wanted if view.get(h, 0) != raw.get(h, 0)]
    for h in fixed:
        await _rebuild(analytics, h, h + 3600)
    return fixed


async def rebuild_usage(analytics: Any, hours: int, ttl_days: int = 0) -> str:
    """Rebuild the last `hours` whole hours (and the current one) of `usage_hourly` from
    `events FINAL`. The window never starts before the hour of the oldest raw event
    (older view rows have nothing to be rebuilt from: a shorter TTL once, rows deleted by
    hand), nor in the hour a raw-event TTL of `ttl_days` is cutting into. Returns a report."""
    if hours < 1:
        raise ValueError("hours must be at least 1")
    rows = await analytics.query(
        "SELECT toUnixTimestamp(toStartOfHour(now('UTC'))) AS hour, "
        "toUnixTimestamp(now('UTC')) AS now, count() AS n, "
        "toUnixTimestamp(toStartOfHour(min(timestamp))) AS first FROM events")
    if not rows[0]["n"]:
        return "usage_hourly: no raw events to rebuild from; left as it is"
    since = max(rows[0]["hour"] - hours * 3600, rows[0]["first"])
    if ttl_days > 0:
        since = max(since, _first_whole_hour(rows[0]["now"], ttl_days))
    await _rebuild(analytics, since)
    back = await analytics.query(
        "SELECT sum(requests) AS requests FROM usage_hourly "
        f"WHERE hour >= toDateTime({since}, 'UTC')")
    return (f"usage_hourly: hours from {since} (epoch s) rebuilt from the raw events, "
            f"{back[0]['requests'] or 0} requests")


async def rebuild_usage_cli(settings: Settings, hours: int) -> str:
    url = clickhouse_url(settings)
    if url == "off":
        return "clickhouse: off"
    from watchllm.env.selfhosted.clickhouse import ClickHouseAnalytics

    analytics = ClickHouseAnalytics(url)
    try:
        return await rebuild_usage(analytics, hours, settings.event_ttl_days)
    finally:
        await analytics.close()
