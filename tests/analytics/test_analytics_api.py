"""The analytics API over events ingested through the API and the real pipeline into chDB:
exact totals, filled series, stable keyset pages, the event and run views, access control,
and that hostile input stays a bound parameter."""

from __future__ import annotations

from typing import Any

import pytest

from tests.ingest.helpers import call, new_key
from watchllm.app import Gateway
from watchllm.events.validation import now_ms

NOW = now_ms()


def prompt(i: int, **extra: Any) -> dict[str, Any]:
    return {"event_id": f"pc-{i:03d}", "event_type": "prompt_call", "timestamp": NOW - 60_000 + i,
            "model": ("gpt-4o-mini", "claude-3-5-haiku")[i % 2], "provider": "openai",
            "prompt": f"question {i}", "response": f"answer {i}", "tokens_input": 10 + i,
            "tokens_output": 5, "cost_estimate_usd": 0.001, "latency_ms": 100.5 + i,
            "status": "error" if i % 5 == 0 else "success",
            "cache_status": "HIT" if i % 4 == 0 else "MISS", "run_id": "run-a" if i < 3 else "",
            **extra}


async def ingest(gw: Gateway, key: str, events: list[dict[str, Any]]) -> None:
    status, body = await call(gw, "POST", "/v1/events/batch", {"events": events}, token=key)
    assert status == 202, body
    await gw.env.events.flush()


@pytest.fixture
async def data(gw: Gateway) -> dict[str, Any]:
    pa, ka = await new_key(gw, "alpha")
    pb, kb = await new_key(gw, "beta")
    events = [prompt(i) for i in range(20)]
    events += [
        {"event_id": "tc-1", "event_type": "tool_call", "run_id": "run-a", "tool_name": "search",
         "tool_input": '{"q": "x"}', "tool_output": "3 hits", "latency_ms": 12.25,
         "timestamp": NOW - 60_000 + 1},
        {"event_id": "st-1", "event_type": "agent_step", "run_id": "run-a", "step_number": 1,
         "step_name": "plan", "step_type": "llm", "reasoning": "because",
         "timestamp": NOW - 60_000 + 2, "metadata": {"team": "a"}},
    ]
    await ingest(gw, ka, events)
    await ingest(gw, kb, [prompt(100, event_id="other-1")])
    return {"pa": pa, "ka": ka, "pb": pb, "kb": kb, "events": events}


async def test_stats_are_exact(gw: Gateway, data: dict[str, Any]) -> None:
    status, s = await call(gw, "GET", "/v1/analytics/stats", token=data["ka"],
                           query={"from": NOW - 3_600_000 * 3, "to": NOW + 1000})
    assert status == 200, s
    calls = [e for e in data["events"] if e["event_type"] == "prompt_call"]
    assert s["requests"] == 20
    assert s["tokens_input"] == sum(e["tokens_input"] for e in calls)
    assert s["tokens_output"] == 100
    assert s["cost_usd"] == pytest.approx(0.02)
    assert s["errors"] == 4 and s["error_rate"] == pytest.approx(0.2)
    assert s["cache_hits"] == 5 and s["cache_hit_rate"] == pytest.approx(0.25)
    assert s["latency_ms"]["avg"] == pytest.approx(sum(e["latency_ms"] for e in calls) / 20)
    assert 100 <= s["latency_ms"]["p50"] <= s["latency_ms"]["p95"] <= s["latency_ms"]["p99"]
    assert [m["model"] for m in s["top_models"]] == ["claude-3-5-haiku", "gpt-4o-mini"]
    # The same through whole hours of the view only (range aligned on hours).
    hour = 3_600_000
    status, s2 = await call(gw, "GET", "/v1/analytics/stats", token=data["ka"],
                            query={"from": NOW // hour * hour - 2 * hour,
                                   "to": NOW // hour * hour + hour})
    assert (s2["requests"], s2["tokens_input"]) == (20, s["tokens_input"])


async def test_timeseries_fills_buckets(gw: Gateway, data: dict[str, Any]) -> None:
    for period, points in (("1h", 60), ("6h", 72), ("24h", 24), ("7d", 28), ("30d", 30)):
        status, ts = await call(gw, "GET", "/v1/analytics/timeseries", token=data["ka"],
                                query={"period": period, "metric": "requests,cost_usd,"
                                       "latency_p95_ms,error_rate"})
        assert status == 200, ts
        assert len(ts["data"]) == points, (period, len(ts["data"]))
        assert sum(p["requests"] for p in ts["data"]) == 20, period
        empty = [p for p in ts["data"] if p["requests"] == 0]
        assert empty and all(p["latency_p95_ms"] is None for p in empty)
    status, err = await call(gw, "GET", "/v1/analytics/timeseries", token=data["ka"],
                             query={"period": "2h"})
    assert status == 400 and err["error"]["param"] == "period"


async def test_logs_keyset_pages_are_stable(gw: Gateway, data: dict[str, Any]) -> None:
    seen: list[str] = []
    cursor = None
    while True:
        q = {"limit": 7, **({"cursor": cursor} if cursor else {})}
        status, page = await call(gw, "GET", "/v1/analytics/logs", token=data["ka"], query=q)
        assert status == 200, page
        seen += [r["event_id"] for r in page["data"]]
        if cursor is None:  # events arriving meanwhile (newer) do not shift later pages
            await ingest(gw, data["ka"], [prompt(50, event_id="late-1", timestamp=NOW)])
        cursor = page["next_cursor"]
        if not page["has_more"]:
            break
    expected = sorted(data["events"], key=lambda e: (e["timestamp"], e["event_id"]),
                      reverse=True)
    assert seen == [e["event_id"] for e in expected]


async def test_logs_filters(gw: Gateway, data: dict[str, Any]) -> None:
    async def ids(**q: Any) -> set[str]:
        status, page = await call(gw, "GET", "/v1/analytics/logs", token=data["ka"], query=q)
        assert status == 200, page
        return {r["event_id"] for r in page["data"]}

    assert await ids(status="error") == {"pc-000", "pc-005", "pc-010", "pc-015"}
    assert await ids(model="claude-3-5-haiku", status="error") == {"pc-005", "pc-015"}
    assert await ids(run_id="run-a") == {"pc-000", "pc-001", "pc-002", "tc-1", "st-1"}
    assert await ids(event_type="tool_call") == {"tc-1"}
    assert await ids(q="QUESTION 1") == {f"pc-{i:03d}" for i in (1, *range(10, 20))}
    assert await ids(q="x' OR 1=1 --") == set()  # a bound parameter, not SQL
    status, err = await call(gw, "GET", "/v1/analytics/logs", token=data["ka"],
                             query={"cursor": "garbage!"})
    assert status == 400 and err["error"]["param"] == "cursor"


async def test_event_and_run_views(gw: Gateway, data: dict[str, Any]) -> None:
    status, ev = await call(gw, "GET", "/v1/analytics/event/pc-001", token=data["ka"])
    assert status == 200, ev
    sent = data["events"][1]
    assert {k: ev[k] for k in sent} == sent  # exactly what was sent (Float32 latency too)
    assert [t["event_id"] for t in ev["tool_calls"]] == ["tc-1"]
    assert [s["step_name"] for s in ev["agent_steps"]] == ["plan"]
    status, tool = await call(gw, "GET", "/v1/analytics/event/tc-1", token=data["ka"])
    assert tool["tool_name"] == "search" and tool["tool_input"] == '{"q": "x"}'
    status, run = await call(gw, "GET", "/v1/analytics/runs/run-a", token=data["ka"])
    assert status == 200, run
    assert [e["event_id"] for e in run["events"]] == ["pc-000", "pc-001", "tc-1", "pc-002",
                                                      "st-1"]
    assert run["summary"]["by_type"] == {"prompt_call": 3, "tool_call": 1, "agent_step": 1}
    status, _ = await call(gw, "GET", "/v1/analytics/runs/nope", token=data["ka"])
    assert status == 404


async def test_project_isolation(gw: Gateway, data: dict[str, Any]) -> None:
    ka, kb, pa = data["ka"], data["kb"], data["pa"]
    status, _ = await call(gw, "GET", "/v1/analytics/event/other-1", token=ka)
    assert status == 404  # beta's event is invisible to alpha's key
    status, _ = await call(gw, "GET", "/v1/analytics/stats", token=kb, query={"project_id": pa})
    assert status == 403
    status, s = await call(gw, "GET", "/v1/analytics/stats", token=kb)
    assert s["requests"] == 1
    status, s = await call(gw, "GET", "/v1/analytics/stats")  # admin: every project
    assert s["requests"] == 21
    status, s = await call(gw, "GET", "/v1/analytics/stats", query={"project_id": pa})
    assert s["requests"] == 20
    _, ingest_only = await new_key(gw, "gamma", scopes=["ingest"])
    status, _ = await call(gw, "GET", "/v1/analytics/logs", token=ingest_only)
    assert status == 403
