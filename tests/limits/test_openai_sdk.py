"""The openai SDK's own retry logic against our 429s: it waits `retry-after-ms`, retries,
succeeds; and it gives up at once on `x-should-retry: false` (an exhausted quota)."""

from __future__ import annotations

import time
from typing import Any

import httpx
import openai
import orjson
import pytest

from watchllm.env.embedded.memory import MemoryCounters
from watchllm.errors import RateLimitError
from watchllm.limits import Limits, LimitsService, Scope
from watchllm.settings import Settings

COMPLETION = orjson.dumps({
    "id": "c1", "object": "chat.completion", "created": 0, "model": "gpt-4o-mini",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"},
                 "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})


def limited_app(svc: LimitsService, limits: Limits, attempts: list[float]) -> Any:
    """A stand-in for the gateway: admit with the token cost the client names, answer."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        cost = int(dict(scope["headers"]).get(b"x-cost", b"1"))
        attempts.append(time.monotonic())
        try:
            admission = await svc.admit("p", "k", cost, limits)
        except RateLimitError as exc:
            headers = [(k.encode(), v.encode()) for k, v in exc.headers.items()]
            await send({"type": "http.response.start", "status": 429,
                        "headers": [(b"content-type", b"application/json"), *headers]})
            await send({"type": "http.response.body", "body": exc.body()})
            return
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"),
                                *[(k.encode(), v.encode()) for k, v in svc.headers(admission)]]})
        await send({"type": "http.response.body", "body": COMPLETION})

    return app


def client(app: Any, retries: int = 2) -> openai.AsyncOpenAI:
    transport = httpx.ASGITransport(app=app)
    return openai.AsyncOpenAI(api_key="wl_test", base_url="http://gw/v1", max_retries=retries,
                              http_client=httpx.AsyncClient(transport=transport))


async def test_sdk_waits_retry_after_then_succeeds() -> None:
    svc = LimitsService(MemoryCounters(), Settings())  # real clock
    attempts: list[float] = []
    sdk = client(limited_app(svc, Limits(key=Scope(tpm=6000)), attempts))
    messages: Any = [{"role": "user", "content": "hi"}]
    await sdk.chat.completions.create(model="gpt-4o-mini", messages=messages,
                                      extra_headers={"x-cost": "6000"})  # empties the bucket
    started = time.monotonic()
    raw = await sdk.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=messages, extra_headers={"x-cost": "50"})
    waited = time.monotonic() - started
    assert len(attempts) == 3  # the first call, the 429, the successful retry
    assert 0.45 <= waited < 5  # 50 tokens at 6000/min refill in 0.5 s: retry-after-ms 500
    assert raw.headers["x-ratelimit-limit-tokens"] == "6000"
    assert int(raw.headers["x-ratelimit-remaining-tokens"]) < 100  # refilled only by the wait


async def test_sdk_does_not_retry_an_exhausted_quota() -> None:
    svc = LimitsService(MemoryCounters(), Settings())
    attempts: list[float] = []
    sdk = client(limited_app(svc, Limits(max_requests=1), attempts), retries=5)
    messages: Any = [{"role": "user", "content": "hi"}]
    await sdk.chat.completions.create(model="gpt-4o-mini", messages=messages)
    with pytest.raises(openai.RateLimitError) as err:
        await sdk.chat.completions.create(model="gpt-4o-mini", messages=messages)
    assert len(attempts) == 2  # no retries despite max_retries=5
    assert err.value.code == "insufficient_quota"
