"""Every request emits one structured event with what it did (in-process app, openai SDK)."""

from __future__ import annotations

import gc
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from watchllm.app import Gateway
from watchllm.entrypoints.factory import build_env
from watchllm.events.memory_queue import MemoryEventQueue
from watchllm.settings import load_settings


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[tuple[Gateway, str]]:
    settings = load_settings({"WATCHLLM_DATA_DIR": str(tmp_path),
                              "WATCHLLM_CLICKHOUSE_URL": "off"}, None)
    gw = Gateway(settings, build_env)
    async with gw:
        project = await gw.store.create_project("events")
        _, key = await gw.store.create_key(project.id)
        yield gw, key


def _client(gw: Gateway, key: str) -> openai.AsyncOpenAI:
    transport = httpx.ASGITransport(app=gw)
    return openai.AsyncOpenAI(base_url="http://gw/v1", api_key=key, max_retries=0,
                              http_client=httpx.AsyncClient(transport=transport))


def _events(gw: Gateway) -> list[dict[str, Any]]:
    queue = gw.env.events
    assert isinstance(queue, MemoryEventQueue)
    return queue.snapshot()


async def test_success_miss_then_hit(app: tuple[Gateway, str]) -> None:
    gw, key = app
    client = _client(gw, key)
    msgs: Any = [{"role": "user", "content": "count me"}]
    for _ in range(2):
        await client.chat.completions.create(model="mock-1", messages=msgs,
                                             extra_headers={"x-request-id": "rid-1"})
    first, second = _events(gw)
    assert first["event_type"] == "prompt_call" and first["project_id"].startswith("proj_")
    assert first["key_id"] and first["model"] == "mock-1" and first["provider"] == "mock"
    assert first["tokens_input"] > 0 and first["tokens_output"] > 0
    assert first["http_status"] == 200 and first["status"] == "success"
    assert first["latency_ms"] > 0 and first["time_to_first_token_ms"] is not None
    assert first["request_id"] == "rid-1" and first["endpoint"] == "chat/completions"
    assert "count me" in first["prompt"] and "count me" in first["response"]
    assert (first["cache_status"], second["cache_status"]) == ("MISS", "HIT")


async def test_errors_are_events_too(app: tuple[Gateway, str]) -> None:
    gw, key = app
    client = _client(gw, key)
    with pytest.raises(openai.BadRequestError):
        await client.chat.completions.create(model="mock-1", messages="nope")  # type: ignore[arg-type]
    with pytest.raises(openai.APIStatusError):
        await client.chat.completions.create(
            model="mock-1", messages=[{"role": "user", "content": "x"}],
            extra_body={"mock": {"status": 503}})
    bad_request, upstream = _events(gw)
    assert (bad_request["http_status"], bad_request["event_type"]) == (400, "error")
    assert bad_request["error_type"] == "invalid_request_error"
    assert upstream["http_status"] == 502 and "503" in upstream["error_message"]


async def test_unauthenticated_requests_are_not_a_projects_event(
        app: tuple[Gateway, str]) -> None:
    gw, _ = app
    with pytest.raises(openai.AuthenticationError):
        await _client(gw, "wl_nope").chat.completions.create(
            model="mock-1", messages=[{"role": "user", "content": "x"}])
    assert _events(gw) == []


async def test_remembered_hits_emit_the_same_event_as_full_hits(
        app: tuple[Gateway, str]) -> None:
    """The third and later identical requests replay from the remembered request
    (proxy/hot.py); their events must match a full-path HIT apart from per-request fields."""
    gw, key = app
    client = _client(gw, key)
    msgs: Any = [{"role": "user", "content": "remember me"}]
    for i in range(4):
        await client.chat.completions.create(model="mock-1", messages=msgs, user="u1",
                                             extra_headers={"x-request-id": f"rid-{i}"})
    assert len(gw.hot) == 1  # the repeat path is in use
    miss, full_hit, *hot_hits = _events(gw)
    per_request = {"event_id", "request_id", "timestamp", "latency_ms",
                   "time_to_first_token_ms"}
    for event in hot_hits:
        assert {k: v for k, v in event.items() if k not in per_request} == \
            {k: v for k, v in full_hit.items() if k not in per_request}
    assert [e["request_id"] for e in hot_hits] == ["rid-2", "rid-3"]
    assert full_hit["cache_status"] == "HIT" and full_hit["user_id"] == "u1"
    assert full_hit["cost_saved_usd"] == miss["cost_estimate_usd"]
    # A purge makes the next repeat a miss and forgets the remembered request.
    assert await gw.cache.purge(miss["project_id"]) == 1
    await client.chat.completions.create(model="mock-1", messages=msgs, user="u1")
    assert _events(gw)[-1]["cache_status"] == "MISS" and len(gw.hot) == 0


@pytest.mark.skipif(sys.version_info >= (3, 14), reason="CPython 3.14 tracks every dict "
                    "(python/cpython#127010): the optimisation does not apply there")
async def test_events_stay_out_of_the_cyclic_collector(app: tuple[Gateway, str]) -> None:
    """Events wait in memory for their batch (thousands at a time). Holding only str,
    numbers and None, CPython never tracks them for the cyclic collector, so they do not
    lengthen its pauses (a list or dict value in an event made 20k queued events part of
    every collection: 6-20 ms pauses in the p99 of cache hits, docs/performance.md)."""
    gw, key = app
    client = _client(gw, key)
    msgs: Any = [{"role": "user", "content": "untracked"}]
    for _ in range(4):  # a miss, a full-path hit, remembered hits
        await client.chat.completions.create(model="mock-1", messages=msgs)
    with pytest.raises(openai.BadRequestError):
        await client.chat.completions.create(model="mock-1", messages="nope")  # type: ignore[arg-type]
    events = _events(gw)
    assert [e["cache_status"] for e in events[:4]] == ["MISS", "HIT", "HIT", "HIT"]
    assert len(events) == 5
    for event in events:
        assert not gc.is_tracked(event), {k: type(v) for k, v in event.items()}
