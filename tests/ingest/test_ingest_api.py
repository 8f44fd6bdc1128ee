"""The ingest API through the ASGI app, with the in-memory queue so that exactly what was
written can be checked: one event, atomic and partial batches, project access, limits,
idempotent event_ids, and the error shapes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.ingest.helpers import ADMIN, call, new_key
from watchllm.app import Gateway
from watchllm.env.embedded import build_env
from watchllm.events.validation import now_ms
from watchllm.settings import load_settings


def settings_for(tmp_path: Path, **extra: str) -> Any:
    return load_settings({"WATCHLLM_ADMIN_KEY": ADMIN, "WATCHLLM_DATA_DIR": str(tmp_path),
                          "WATCHLLM_CLICKHOUSE_URL": "off", "WATCHLLM_KEY_CACHE_TTL": "0",
                          "WATCHLLM_INGEST_MAX_EVENTS": "10",
                          "WATCHLLM_INGEST_MAX_BYTES": "20000", **extra}, None)


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[Gateway]:
    gateway = Gateway(settings_for(tmp_path), build_env)
    await gateway.startup()
    yield gateway
    await gateway.shutdown()


def written(gw: Gateway) -> list[dict[str, Any]]:
    return gw.env.events.snapshot()  # type: ignore[attr-defined, no-any-return]


def ev(i: int = 0, **extra: Any) -> dict[str, Any]:
    return {"event_type": "prompt_call", "model": "gpt-4o-mini", "event_id": f"e-{i}",
            "timestamp": now_ms(), **extra}


async def test_one_event(gw: Gateway) -> None:
    project, key = await new_key(gw, "one")
    status, body = await call(gw, "POST", f"/v1/projects/{project}/events", ev(1), token=key)
    assert status == 202, body
    assert body == {"object": "event", "id": "e-1", "project_id": project, "accepted": True,
                    "duplicate": False}
    (row,) = written(gw)
    assert row["project_id"] == project and row["event_id"] == "e-1"
    assert row["key_id"] and row["key_id"] in key
    # generated id when none is sent
    status, body = await call(gw, "POST", f"/v1/projects/{project}/events",
                              {"event_type": "tool_call", "tool_name": "t"}, token=key)
    assert status == 202 and body["id"] and written(gw)[-1]["event_id"] == body["id"]


async def test_one_event_errors(gw: Gateway) -> None:
    project, key = await new_key(gw, "errs")
    other, _ = await new_key(gw, "other")
    url = f"/v1/projects/{project}/events"
    status, body = await call(gw, "POST", url, ev(tags=[1]), token=key)
    assert status == 422
    assert body["error"]["errors"] == [{"index": 0, "field": "tags[0]",
                                        "message": "expected a string, got int"}]
    assert body["error"]["param"] == "events[0].tags[0]"
    status, body = await call(gw, "POST", url, ev(project_id=other), token=key)
    assert status == 422 and body["error"]["errors"][0]["field"] == "project_id"
    status, body = await call(gw, "POST", f"/v1/projects/{other}/events", ev(), token=key)
    assert status == 403 and body["error"]["type"] == "permission_error"
    status, body = await call(gw, "POST", url, raw=b"{nope", token=key)
    assert status == 400
    status, body = await call(gw, "POST", url, raw=b"[1]", token=key)
    assert status == 422
    status, _ = await call(gw, "POST", url, ev(), token="wl_bad_key")
    assert status == 401
    status, _ = await call(gw, "POST", f"/v1/projects/{project}/other", ev(), token=key)
    assert status == 404
    _, reader = await new_key(gw, "reader", scopes=["analytics"])
    status, _ = await call(gw, "POST", "/v1/events/batch", {"events": [ev()]}, token=reader)
    assert status == 403
    assert written(gw) == []


async def test_batch_atomic_and_partial(gw: Gateway) -> None:
    _, key = await new_key(gw, "batch")
    bad = ev(2, status="fine")
    status, body = await call(gw, "POST", "/v1/events/batch", {"events": [ev(1), bad, ev(3)]},
                              token=key)
    assert status == 422 and body["error"]["errors"][0]["index"] == 1
    assert written(gw) == []  # atomic: nothing
    status, body = await call(gw, "POST", "/v1/events/batch",
                              {"events": [ev(1), bad, ev(3)], "mode": "partial"}, token=key)
    assert status == 202, body
    assert [a["event_id"] for a in body["accepted"]] == ["e-1", "e-3"]
    assert body["rejected"] == [1] and body["errors"][0]["field"] == "status"
    assert [r["event_id"] for r in written(gw)] == ["e-1", "e-3"]
    status, body = await call(gw, "POST", "/v1/events/batch", {"events": [bad],
                                                               "mode": "partial"}, token=key)
    assert status == 422  # none valid


async def test_batch_access_and_limits(gw: Gateway) -> None:
    project, key = await new_key(gw, "lim")
    other, _ = await new_key(gw, "lim2")
    status, body = await call(gw, "POST", "/v1/events/batch",
                              {"events": [ev(1), ev(2, project_id=other)], "mode": "partial"},
                              token=key)
    assert status == 403 and body["error"]["errors"][0]["index"] == 1
    status, body = await call(gw, "POST", "/v1/events/batch",
                              {"events": [ev(i) for i in range(11)]}, token=key)
    assert status == 413 and body["error"]["code"] == "too_many_events"
    status, body = await call(gw, "POST", "/v1/events/batch",
                              {"events": [ev(1, prompt="x" * 30000)]}, token=key)
    assert status == 413 and "WATCHLLM_INGEST_MAX_BYTES" in body["error"]["message"]
    for envelope in ([ev(1)], {"events": {}}, {"events": [], "mode": "some"},
                     {"events": [], "extra": 1}):
        status, _ = await call(gw, "POST", "/v1/events/batch", envelope, token=key)
        assert status == 400, envelope
    assert written(gw) == []
    # the admin key writes any project, but must name it
    status, body = await call(gw, "POST", "/v1/events/batch", {"events": [ev(5)]})
    assert status == 422 and body["error"]["errors"][0]["field"] == "project_id"
    status, body = await call(gw, "POST", "/v1/events/batch",
                              {"events": [ev(5, project_id=project), ev(6, project_id=other)]})
    assert status == 202 and {r["project_id"] for r in written(gw)} == {project, other}


async def test_duplicate_event_ids_are_written_once(gw: Gateway) -> None:
    project, key = await new_key(gw, "dup")
    status, body = await call(gw, "POST", "/v1/events/batch",
                              {"events": [ev(1), ev(1), ev(2)]}, token=key)
    assert [a["duplicate"] for a in body["accepted"]] == [False, True, False]
    status, body = await call(gw, "POST", "/v1/events/batch", {"events": [ev(2), ev(3)]},
                              token=key)
    assert [a["duplicate"] for a in body["accepted"]] == [True, False]
    status, body = await call(gw, "POST", f"/v1/projects/{project}/events", ev(3), token=key)
    assert status == 202 and body["duplicate"] is True
    assert [r["event_id"] for r in written(gw)] == ["e-1", "e-2", "e-3"]


async def test_queue_refusal_is_503_and_releases_ids(tmp_path: Path) -> None:
    gateway = Gateway(settings_for(tmp_path), build_env)
    await gateway.startup()
    try:
        _, key = await new_key(gateway, "full")
        queue: Any = gateway.env.events
        real_put = queue.put
        queue.put = lambda event: setattr(queue, "dropped", queue.dropped + 1)
        status, body = await call(gateway, "POST", "/v1/events/batch", {"events": [ev(1)]},
                                  token=key)
        assert status == 503, body
        queue.put = real_put
        status, body = await call(gateway, "POST", "/v1/events/batch", {"events": [ev(1)]},
                                  token=key)
        assert status == 202 and body["accepted"][0]["duplicate"] is False  # retry works
    finally:
        await gateway.shutdown()


async def test_openapi_document(gw: Gateway) -> None:
    status, doc = await call(gw, "GET", "/openapi.json")
    assert status == 200 and doc["openapi"].startswith("3.")
    assert {"/v1/events/batch", "/v1/projects/{project_id}/events", "/v1/analytics/stats",
            "/v1/analytics/logs", "/v1/analytics/event/{event_id}"} <= set(doc["paths"])
    assert doc["components"]["schemas"]["Event_tool_call"]["required"] == ["event_type",
                                                                           "tool_name"]
