"""Repeated identical requests (the third and later take the remembered-request path,
watchllm/proxy/hot.py): they must behave exactly like any other cache hit — own request id
and event, purges, revocations, project settings and limits all seen at once."""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

import httpx

from tests.e2e.conftest import admin, new_key, stats
from watchllm.metadata.store import parse_key
from watchllm.testing.servers import Server

REPEATS = 6


def _body(**extra: Any) -> dict[str, Any]:
    return {"model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": f"repeat {uuid.uuid4().hex}"}], **extra}


def _post(gateway: Server, key: str, body: dict[str, Any], **headers: str) -> httpx.Response:
    return httpx.post(gateway.url + "/v1/chat/completions", json=body, timeout=10,
                      headers={"authorization": f"Bearer {key}", **headers})


def _remembered(gateway: Server, project: str) -> tuple[str, dict[str, Any]]:
    """A key of `project` and a body it has sent four times (so it is remembered)."""
    key, body = new_key(gateway, project), _body()
    for _ in range(4):
        assert _post(gateway, key, body).status_code == 200
    return key, body


def _calls(upstream: Server) -> int:
    return int(stats(upstream)["requests"].get("/v1/chat/completions", 0))


def _project_id(gateway: Server, name: str) -> str:
    listing = admin(gateway, "GET", "/v1/admin/projects").json()["data"]
    return str(next(p["id"] for p in listing if p["name"] == name))


def _hit_metrics(gateway: Server) -> tuple[float, float, float]:
    """HIT outcomes, chat requests answered 200 and chat time-to-first-token samples."""
    text = httpx.get(gateway.url + "/metrics", timeout=10).text

    def value(pattern: str) -> float:
        return sum(float(v) for v in re.findall(rf"^{pattern} ([\d.e+]+)$", text, re.M))

    return (value(r'watchllm_cache_lookups_total\{outcome="HIT"\}'),
            value(r'watchllm_requests_total\{model="gpt-4o-mini",route="chat/completions",'
                  r'status="200"\}'),
            value(r'watchllm_time_to_first_token_seconds_count\{route="chat/completions"\}'))


def test_repeats_are_hits_with_their_own_ids_and_events(gateway: Server,
                                                        upstream: Server) -> None:
    key = new_key(gateway, "repeats", scopes=["proxy", "analytics"])
    body = _body()
    first = _post(gateway, key, body)
    before = _calls(upstream)
    time.sleep(1.2)  # the metrics of earlier requests are flushed (every second)
    counted = _hit_metrics(gateway)
    ids = [f"client-{uuid.uuid4().hex}" for _ in range(REPEATS)]
    replies = [_post(gateway, key, body, **{"x-request-id": rid}) for rid in ids]
    assert _calls(upstream) == before
    assert [r.headers["x-watchllm-cache"] for r in replies] == ["HIT"] * REPEATS
    assert [r.headers["x-request-id"] for r in replies] == ids
    assert all(r.content == first.content for r in replies)
    assert all(int(r.headers["age"]) >= 0 and float(r.headers["x-watchllm-latency-ms"]) >= 0
               for r in replies)
    # Each repeat counted in the metrics, like any hit: outcome, request, first token.
    deadline = time.monotonic() + 5
    while (grown := [b - a for a, b in zip(counted, _hit_metrics(gateway), strict=True)]) \
            != [REPEATS] * 3 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert grown == [REPEATS] * 3
    # One event per request, each with its own id, HIT outcome and saved cost.
    deadline = time.monotonic() + 20
    found: dict[str, Any] = {}
    while len(found) < len(ids) and time.monotonic() < deadline:
        for rid in ids:
            if rid not in found:
                r = httpx.get(f"{gateway.url}/v1/analytics/event/{rid}",
                              headers={"authorization": f"Bearer {key}"}, timeout=10)
                if r.status_code == 200:
                    found[rid] = r.json()
        time.sleep(0.3)
    assert set(found) == set(ids)
    for rid, event in found.items():
        event = event.get("event", event)
        assert event["request_id"] == rid and event["cache_status"] == "HIT"
        assert event["http_status"] == 200 and event["model"] == "gpt-4o-mini"
        assert 0 <= event["time_to_first_token_ms"] <= event["latency_ms"] < 10_000
    assert len({e.get("event", e)["timestamp"] for e in found.values()}) >= 1


def test_streamed_repeats_replay_the_same_stream(gateway: Server, upstream: Server) -> None:
    key = new_key(gateway, "repeats")
    body = _body(stream=True, stream_options={"include_usage": True})
    first = _post(gateway, key, body)
    before = _calls(upstream)
    again = [_post(gateway, key, body) for _ in range(REPEATS)]
    assert _calls(upstream) == before
    assert all(r.headers["content-type"].startswith("text/event-stream") for r in again)
    # A replay is the stored chunk sequence: the same bytes each time, ending in [DONE].
    assert len({r.content for r in again}) == 1
    assert again[0].content.rstrip().endswith(b"data: [DONE]")
    assert b'"usage"' in again[0].content
    assert first.status_code == 200


def test_a_purge_is_seen_by_the_next_repeat(gateway: Server, upstream: Server) -> None:
    key = new_key(gateway, "repeat-purge", scopes=["proxy", "admin"])
    body = _body()
    assert [_post(gateway, key, body).headers["x-watchllm-cache"]
            for _ in range(4)] == ["MISS", "HIT", "HIT", "HIT"]
    r = httpx.post(gateway.url + "/v1/cache/purge", json={"request": body},
                   headers={"authorization": f"Bearer {key}"})
    assert r.json()["deleted"] == 1
    before = _calls(upstream)
    assert _post(gateway, key, body).headers["x-watchllm-cache"] == "MISS"
    assert _calls(upstream) == before + 1


def test_a_revoked_key_is_refused_on_a_repeat(gateway: Server) -> None:
    key, body = _remembered(gateway, "repeat-revoke")
    key_id = parse_key(key)
    r = admin(gateway, "POST", f"/v1/admin/keys/{key_id}/revoke")
    assert r.status_code in (200, 204), r.text
    # Revoked through this (single) worker: refused at once, cache or not.
    r = _post(gateway, key, body)
    assert r.status_code == 401 and r.json()["error"]["code"] == "key_revoked"


def test_a_project_setting_change_is_seen_by_the_next_repeat(gateway: Server,
                                                              upstream: Server) -> None:
    key, body = _remembered(gateway, "repeat-settings")
    project = _project_id(gateway, "repeat-settings")
    r = admin(gateway, "PATCH", f"/v1/admin/projects/{project}",
              json={"settings": {"cache": {"mode": "off"}}})
    assert r.status_code == 200, r.text
    before = _calls(upstream)
    assert _post(gateway, key, body).headers["x-watchllm-cache"] == "BYPASS"
    assert _calls(upstream) == before + 1


def test_cache_control_headers_still_apply_to_repeats(gateway: Server,
                                                      upstream: Server) -> None:
    key, body = _remembered(gateway, "repeat-controls")
    before = _calls(upstream)
    r = _post(gateway, key, body, **{"cache-control": "no-cache"})
    assert r.headers["x-watchllm-cache"] == "MISS" and _calls(upstream) == before + 1
    assert _post(gateway, key, body, **{"x-watchllm-cache-mode": "off"}) \
        .headers["x-watchllm-cache"] == "BYPASS"


def test_limits_count_every_repeat(limited: Server) -> None:
    key = new_key(limited, "repeat-rpm")
    body = _body()
    results = [_post(limited, key, body) for _ in range(7)]
    assert [r.status_code for r in results] == [200] * 5 + [429] * 2
    assert [r.headers.get("x-watchllm-cache") for r in results[:5]] == \
        ["MISS", "HIT", "HIT", "HIT", "HIT"]
    assert [r.headers["x-ratelimit-remaining-requests"] for r in results[:5]] == \
        ["4", "3", "2", "1", "0"]
    assert results[5].json()["error"]["type"] == "rate_limit_error"
