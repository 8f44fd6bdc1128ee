"""Analytics API (docs/analytics.md). Every endpoint needs a key with the `analytics` scope;
a project key sees only its own project, the admin key any (or all, without project_id).

    GET /v1/analytics/stats?project_id=&from=&to=
    GET /v1/analytics/timeseries?project_id=&period=1h|6h|24h|7d|30d&metric=a,b
    GET /v1/analytics/logs?project_id=&status=&model=&run_id=&event_type=&q=&from=&to=
                          &limit=&cursor=
    GET /v1/analytics/event/{event_id}?project_id=
    GET /v1/analytics/runs/{run_id}?project_id=
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from watchllm.analytics import params as P
from watchllm.analytics import queries
from watchllm.env.base import Analytics
from watchllm.errors import (
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
    ServiceUnavailableError,
)
from watchllm.events.schema import EVENT_TYPES
from watchllm.http.asgi import Request, Send, send_json

if TYPE_CHECKING:
    from watchllm.app import Gateway


async def _scope(gw: Gateway, req: Request) -> tuple[dict[str, str], str | None]:
    """The query parameters and the project the caller may see (None: all, admin only)."""
    principal = await gw.auth.authenticate(req.bearer(), "analytics")
    params = req.query_params()
    wanted = params.get("project_id") or None
    if principal.project_id == "*":
        return params, wanted
    if wanted is not None and wanted != principal.project_id:
        raise PermissionDeniedError(f"this key may not read project {wanted!r}",
                                    param="project_id")
    return params, principal.project_id


async def _call(gw: Gateway, fn: Callable[[Analytics], Awaitable[Any]]) -> Any:
    ch = gw.env.analytics
    if ch is None:
        raise ServiceUnavailableError("analytics is off (no ClickHouse configured: "
                                      "WATCHLLM_CLICKHOUSE_URL)")
    try:
        return await fn(ch)
    except ConnectionError as e:
        raise ServiceUnavailableError(f"analytics is unavailable: {e}") from None


async def stats(gw: Gateway, req: Request, send: Send) -> None:
    params, scope = await _scope(gw, req)
    start, end = P.time_range(params)
    result = await _call(gw, lambda ch: queries.stats(ch, scope, start, end))
    await send_json(send, 200, result)


async def timeseries(gw: Gateway, req: Request, send: Send) -> None:
    params, scope = await _scope(gw, req)
    period, metrics = P.period(params.get("period")), P.metrics(params.get("metric"))
    now = P.now_ms()
    result = await _call(gw, lambda ch: queries.timeseries(ch, scope, period, metrics, now))
    await send_json(send, 200, result)


async def logs(gw: Gateway, req: Request, send: Send) -> None:
    params, scope = await _scope(gw, req)
    filters = {n: v for n in P.LOG_FILTERS if (v := P.text_param(params, n)) is not None}
    if "event_type" in filters and filters["event_type"] not in EVENT_TYPES:
        raise InvalidRequestError(f"'event_type' must be one of {', '.join(EVENT_TYPES)}",
                                  param="event_type")
    q = P.text_param(params, "q", P.MAX_Q)
    start = P.parse_time("from", params.get("from"), -1)
    end = P.parse_time("to", params.get("to"), -1)
    raw_cursor = params.get("cursor")
    cursor = P.decode_cursor(raw_cursor) if raw_cursor else None
    limit = P.limit(params.get("limit"))
    rows, more = await _call(gw, lambda ch: queries.logs(
        ch, scope, filters, q, None if start < 0 else start, None if end < 0 else end,
        cursor, limit))
    next_cursor = P.encode_cursor(rows[-1]["timestamp"], rows[-1]["event_id"]) if more else None
    await send_json(send, 200, {"object": "list", "data": rows, "has_more": more,
                                "next_cursor": next_cursor})


def _tail(req: Request, prefix: str) -> str:
    value = req.path.removeprefix(prefix)  # ASGI paths arrive percent-decoded
    if not value or "/" in value or len(value) > 256:
        raise NotFoundError(f"Unknown endpoint: {req.method} {req.path}")
    return value


async def event(gw: Gateway, req: Request, send: Send) -> None:
    event_id = _tail(req, "/v1/analytics/event/")
    _, scope = await _scope(gw, req)
    found = await _call(gw, lambda ch: queries.event(ch, scope, event_id))
    if found is None:
        raise NotFoundError(f"no event {event_id!r}" + (f" in project {scope!r}" if scope else ""))
    await send_json(send, 200, {"object": "event", **found})


async def run(gw: Gateway, req: Request, send: Send) -> None:
    run_id = _tail(req, "/v1/analytics/runs/")
    _, scope = await _scope(gw, req)
    found = await _call(gw, lambda ch: queries.run(ch, scope, run_id))
    if found is None:
        raise NotFoundError(f"no run {run_id!r}" + (f" in project {scope!r}" if scope else ""))
    await send_json(send, 200, found)


ROUTES = {
    ("GET", "/v1/analytics/stats"): stats,
    ("GET", "/v1/analytics/timeseries"): timeseries,
    ("GET", "/v1/analytics/logs"): logs,
}
PREFIX_ROUTES = [
    ("GET", "/v1/analytics/event/", event),
    ("GET", "/v1/analytics/runs/", run),
]
