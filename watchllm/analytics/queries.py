"""The analytics queries: ClickHouse SQL on the Analytics seam, the same on chDB and a server.

User input reaches SQL only as bound parameters (`{name:Type}`, bound server-side by
clickhouse-connect); the SQL text is assembled from constant fragments chosen by which
filters are present. `scope` is a project id, or None for every project (admin keys).

Where the data comes from:
- stats: `usage_hourly` (the materialized view) for the whole hours inside the range, the
  raw `events` table for the partial hours at either edge, merged (sums add up; latency
  quantile states merge), so any `from`/`to` is exact while a month costs a few thousand
  view rows. The average latency is the view's `latency_ms_sum / latency_ms_count`.
- timeseries: the view for hourly and coarser buckets; `events` for the minute buckets
  of 1h and 6h (small ranges). Empty buckets come from `WITH FILL`.
- logs, event, runs: `events` (and `tool_calls`, `agent_steps`), newest first on the
  table's own order key (project_id, timestamp, event_id).

Duplicates: the pipeline is at-least-once and ReplacingMergeTree collapses duplicates only
at merge time; `FINAL` costs ~700 ms on 10M rows, so row queries deduplicate with
`LIMIT 1 BY` instead. The view is fed on insert; a batch the pipeline re-sends after a
crash carries the same deduplication token and is dropped there too, and the ingest API
drops retried event_ids before they reach the pipeline.
"""

from __future__ import annotations

import json
import struct
from typing import Any

from watchllm.analytics.params import HOUR_MS, Period
from watchllm.env.base import Analytics, Row
from watchllm.events.clickhouse_schema import QUANTILES
from watchllm.events.schema import AGENT_STEPS_COLUMNS, EVENTS_COLUMNS, TOOL_CALLS_COLUMNS

Scope = str | None
LEVELS = "0.5, 0.95, 0.99"
CALLS = "event_type IN ('prompt_call', 'error')"  # what usage_hourly counts as requests
ERROR = "(event_type = 'error' OR status = 'error')"
HIT = "cache_status IN ('HIT', 'SEMANTIC_HIT')"
RAW_SUMS = f"""count() AS requests, countIf({ERROR}) AS errors, countIf({HIT}) AS cache_hits,
    sum(toUInt64(tokens_input)) AS tokens_input, sum(toUInt64(tokens_output)) AS tokens_output,
    sum(cost_estimate_usd) AS cost_usd, sum(cost_saved_usd) AS cost_saved_usd"""
VIEW_SUMS = """sum(requests) AS requests, sum(errors) AS errors, sum(cache_hits) AS cache_hits,
    sum(tokens_input) AS tokens_input, sum(tokens_output) AS tokens_output,
    sum(cost_usd) AS cost_usd, sum(cost_saved_usd) AS cost_saved_usd"""
SUM_NAMES = ("requests", "errors", "cache_hits", "tokens_input", "tokens_output", "cost_usd",
             "cost_saved_usd")
LATENCY_NAMES = ("latency_ms_sum", "latency_ms_count")  # the average, exact, from the view
RAW_LATENCY = "sum(toFloat64(latency_ms)) AS latency_ms_sum, count() AS latency_ms_count"
VIEW_LATENCY = "sum(latency_ms_sum) AS latency_ms_sum, sum(latency_ms_count) AS latency_ms_count"
MAX_RUN_EVENTS = 1000


def _ts(name: str) -> str:
    return f"fromUnixTimestamp64Milli({{{name}:Int64}}, 'UTC')"


def _scope(scope: Scope, params: dict[str, Any]) -> str:
    if scope is None:
        return "1"
    params["project"] = scope
    return "project_id = {project:String}"


def _columns(columns: tuple[tuple[str, str], ...]) -> str:
    # Not aliased `timestamp`: an alias shadows the column in WHERE and ORDER BY.
    return ", ".join("toUnixTimestamp64Milli(timestamp) AS timestamp_ms" if c == "timestamp"
                     else f"`{c}`" for c, _ in columns)


EVENT_SELECT = _columns(EVENTS_COLUMNS)
_FLOAT32 = {c for c, t in (*EVENTS_COLUMNS, *TOOL_CALLS_COLUMNS, *AGENT_STEPS_COLUMNS)
            if "Float32" in t}


def f32(x: float) -> float:
    """The shortest decimal that is the same Float32: what the client sent (123.4, not
    123.40000152587891), since latencies are stored as Float32."""
    for digits in range(1, 10):
        candidate = float(f"{x:.{digits}g}")
        if struct.unpack("<f", struct.pack("<f", candidate))[0] == x:
            return candidate
    return x


def render(row: Row) -> Row:
    """A stored row as the API returns it: Float32 columns rounded back, type-specific
    fields (`properties`) put back at the top level."""
    out = {("timestamp" if k == "timestamp_ms" else k):
           (f32(v) if k in _FLOAT32 and isinstance(v, float) else v) for k, v in row.items()}
    props = out.pop("properties", "")
    if isinstance(props, str) and props:
        try:
            extra = json.loads(props)
        except ValueError:
            extra = {"properties": props}
        if isinstance(extra, dict):
            out.update(extra)
    return out


# -- stats ------------------------------------------------------------------------------
def _edges(start: int, end: int) -> dict[str, int]:
    """Whole hours [h0, h1) from the view, [start, h0) and [h1, end) from raw events."""
    h0 = -(-start // HOUR_MS) * HOUR_MS
    h1 = end // HOUR_MS * HOUR_MS
    if h0 >= h1:
        h0 = h1 = end
    return {"start": start, "end": end, "h0": h0, "h1": h1, "h0s": h0 // 1000, "h1s": h1 // 1000}


def _parts(where: str, view_cols: str, raw_cols: str, group: str) -> str:
    return f"""SELECT {view_cols} FROM usage_hourly
    WHERE {where} AND hour >= toDateTime({{h0s:Int64}}, 'UTC')
      AND hour < toDateTime({{h1s:Int64}}, 'UTC')
    UNION ALL
    SELECT {raw_cols} FROM events
    WHERE {where} AND {CALLS}
      AND ((timestamp >= {_ts('start')} AND timestamp < {_ts('h0')})
        OR (timestamp >= {_ts('h1')} AND timestamp < {_ts('end')})){group}"""


async def stats(ch: Analytics, scope: Scope, start: int, end: int, top: int = 10) -> Row:
    params: dict[str, Any] = {**_edges(start, end), "top": top}
    where = _scope(scope, params)
    names = ", ".join((*SUM_NAMES, *LATENCY_NAMES))
    by_model = f"""SELECT model, {VIEW_SUMS}, {VIEW_LATENCY} FROM (
    {_parts(where, "model, " + names, f"model, {RAW_SUMS}, {RAW_LATENCY}", " GROUP BY model")}
) GROUP BY model ORDER BY requests DESC, model"""
    quantiles = f"""SELECT quantilesMerge({LEVELS})(lat) AS q FROM (
    {_parts(where, "latency_ms AS lat", f"quantilesState({QUANTILES})(latency_ms)", "")})"""
    models = await ch.query(by_model, params)
    totals: dict[str, Any] = {n: sum(m[n] for m in models) for n in SUM_NAMES}
    requests = totals["requests"]
    q = list((await ch.query(quantiles, params))[0]["q"]) if requests else []
    lat_sum = sum(m["latency_ms_sum"] for m in models)
    lat_count = sum(m["latency_ms_count"] for m in models)
    return {
        "object": "analytics.stats", "project_id": scope, "from": start, "to": end,
        **{n: (round(v, 10) if isinstance(v, float) else v) for n, v in totals.items()},
        "error_rate": totals["errors"] / requests if requests else 0.0,
        "cache_hit_rate": totals["cache_hits"] / requests if requests else 0.0,
        "latency_ms": {
            "avg": lat_sum / lat_count if lat_count else None,
            "p50": q[0] if q else None, "p95": q[1] if q else None, "p99": q[2] if q else None,
        },
        "top_models": [{"model": m["model"], **{n: m[n] for n in SUM_NAMES}}
                       for m in models[:top]],
    }


# -- timeseries -------------------------------------------------------------------------
async def timeseries(ch: Analytics, scope: Scope, period: Period, metrics: list[str],
                     now: int) -> Row:
    step = period.step_ms
    last = now // step * step
    params: dict[str, Any] = {"b0": (last - period.span_ms + step) // 1000,
                              "b1": (last + step) // 1000, "step": step // 1000}
    where = _scope(scope, params)
    want_latency = any(m.startswith("latency_") for m in metrics)
    if period.hourly:
        lat = f", quantilesMerge({LEVELS})(latency_ms) AS q" if want_latency else ""
        sql = f"""SELECT toStartOfInterval(hour, toIntervalSecond({{step:UInt32}})) AS bucket,
    {VIEW_SUMS}{lat}
FROM usage_hourly
WHERE {where} AND hour >= toDateTime({{b0:Int64}}, 'UTC') AND hour < toDateTime({{b1:Int64}}, 'UTC')
GROUP BY bucket"""
    else:
        lat = f", quantiles({LEVELS})(latency_ms) AS q" if want_latency else ""
        sql = f"""SELECT toStartOfInterval(toDateTime(timestamp, 'UTC'),
    toIntervalSecond({{step:UInt32}})) AS bucket, {RAW_SUMS}{lat}
FROM events
WHERE {where} AND {CALLS} AND timestamp >= fromUnixTimestamp64Milli({{b0:Int64}} * 1000, 'UTC')
  AND timestamp < fromUnixTimestamp64Milli({{b1:Int64}} * 1000, 'UTC')
GROUP BY bucket"""
    sql += """
ORDER BY bucket WITH FILL FROM toDateTime({b0:Int64}, 'UTC') TO toDateTime({b1:Int64}, 'UTC')
    STEP toIntervalSecond({step:UInt32})"""
    rows = await ch.query(f"SELECT toUnixTimestamp(bucket) * 1000 AS t, * EXCEPT bucket "
                          f"FROM ({sql})", params)
    data = [{"timestamp": r["t"], **{m: _metric(m, r) for m in metrics}} for r in rows]
    return {"object": "analytics.timeseries", "project_id": scope, "period": period.name,
            "step_seconds": step // 1000, "from": params["b0"] * 1000,
            "to": params["b1"] * 1000, "metrics": metrics, "data": data}


def _metric(name: str, r: Row) -> Any:
    requests = r["requests"]
    if name == "error_rate":
        return r["errors"] / requests if requests else 0.0
    if name == "cache_hit_rate":
        return r["cache_hits"] / requests if requests else 0.0
    if name == "tokens":
        return r["tokens_input"] + r["tokens_output"]
    if name.startswith("latency_"):
        q = r.get("q") or []
        index = {"latency_p50_ms": 0, "latency_p95_ms": 1, "latency_p99_ms": 2}[name]
        return q[index] if requests and len(q) > index else None
    value = r[name]
    return round(value, 10) if isinstance(value, float) else value


# -- logs, event, run -------------------------------------------------------------------
LOG_SELECT = """event_id, event_type, project_id,
    toUnixTimestamp64Milli(timestamp) AS timestamp_ms, run_id, user_id, tags, model, provider,
    status, http_status, latency_ms, tokens_input, tokens_output, cost_estimate_usd,
    cache_status, error_type, left(error_message, 500) AS error_message,
    leftUTF8(prompt, 200) AS prompt_preview, leftUTF8(response, 200) AS response_preview"""


async def logs(ch: Analytics, scope: Scope, filters: dict[str, str], q: str | None,
               start: int | None, end: int | None, cursor: tuple[int, str] | None,
               limit: int) -> tuple[list[Row], bool]:
    """A page of events newest first, and whether there are more (keyset pagination)."""
    params: dict[str, Any] = {"limit": limit + 1}
    conds = [_scope(scope, params)]
    for name, value in filters.items():
        params[name] = value
        conds.append(f"{name} = {{{name}:String}}")
    if q is not None:
        params["q"] = q
        conds.append("(positionCaseInsensitiveUTF8(prompt, {q:String}) > 0"
                     " OR positionCaseInsensitiveUTF8(response, {q:String}) > 0"
                     " OR positionCaseInsensitiveUTF8(error_message, {q:String}) > 0)")
    if start is not None:
        params["start"] = start
        conds.append(f"timestamp >= {_ts('start')}")
    if end is not None:
        params["end"] = end
        conds.append(f"timestamp < {_ts('end')}")
    if cursor is not None:
        params["c_ts"], params["c_id"] = cursor
        conds.append(f"timestamp <= {_ts('c_ts')} AND (timestamp < {_ts('c_ts')}"
                     " OR event_id < {c_id:String})")
    # No LIMIT BY here: it stops ClickHouse reading the order key backwards and stopping
    # after one page (15 ms -> 280 ms on 10M rows). A duplicate (same timestamp and id)
    # sits next to its twin in this order, so dropping repeats after the fact is enough.
    sql = f"""SELECT {LOG_SELECT} FROM events WHERE {' AND '.join(conds)}
ORDER BY timestamp DESC, event_id DESC LIMIT {{limit:UInt32}}"""
    fetched = await ch.query(sql, params)
    rows: list[Row] = []
    for r in fetched:
        if rows and (r["event_id"], r["timestamp_ms"]) == (rows[-1]["event_id"],
                                                           rows[-1]["timestamp"]):
            continue
        rows.append(render(r))
    return rows[:limit], len(fetched) > limit


async def event(ch: Analytics, scope: Scope, event_id: str) -> Row | None:
    params: dict[str, Any] = {"id": event_id}
    where = _scope(scope, params)
    rows = await ch.query(f"SELECT {EVENT_SELECT} FROM events WHERE {where} AND "
                          "event_id = {id:String} LIMIT 1", params)
    if not rows:
        return None
    found = render(rows[0])
    params["run"] = found["run_id"]
    related = (f"{where} AND (event_id = {{id:String}}"
               " OR (run_id != '' AND run_id = {run:String}))")
    order = "ORDER BY timestamp, event_id LIMIT 1 BY event_id LIMIT 1000"
    tools = await ch.query(f"SELECT {_columns(TOOL_CALLS_COLUMNS)} FROM tool_calls "
                           f"WHERE {related} {order}", params)
    steps = await ch.query(f"SELECT {_columns(AGENT_STEPS_COLUMNS)} FROM agent_steps "
                           f"WHERE {related} ORDER BY step_number, timestamp, event_id "
                           "LIMIT 1 BY event_id LIMIT 1000", params)
    found["tool_calls"] = [render(r) for r in tools]
    found["agent_steps"] = [render(r) for r in steps]
    return found


async def run(ch: Analytics, scope: Scope, run_id: str) -> Row | None:
    params: dict[str, Any] = {"run": run_id, "limit": MAX_RUN_EVENTS + 1}
    where = _scope(scope, params)
    rows = await ch.query(f"SELECT {EVENT_SELECT} FROM events WHERE {where} AND "
                          "run_id = {run:String} ORDER BY timestamp, event_id "
                          "LIMIT 1 BY event_id LIMIT {limit:UInt32}", params)
    if not rows:
        return None
    events = [render(r) for r in rows[:MAX_RUN_EVENTS]]
    by_type: dict[str, int] = {}
    for e in events:
        by_type[e["event_type"]] = by_type.get(e["event_type"], 0) + 1
    first, last = events[0]["timestamp"], events[-1]["timestamp"]
    return {
        "object": "analytics.run", "run_id": run_id, "truncated": len(rows) > MAX_RUN_EVENTS,
        "summary": {
            "events": len(events), "by_type": by_type,
            "errors": sum(1 for e in events if e["event_type"] == "error"
                          or e["status"] == "error"),
            "tokens_input": sum(e["tokens_input"] for e in events),
            "tokens_output": sum(e["tokens_output"] for e in events),
            "cost_usd": round(sum(e["cost_estimate_usd"] for e in events), 10),
            "started_at": first, "ended_at": last, "duration_ms": last - first,
        },
        "events": events,
    }
