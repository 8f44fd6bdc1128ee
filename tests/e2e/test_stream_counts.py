"""A stream without `include_usage` is counted by the gateway, with limits on or off: the
prompt by OpenAI's formula over the request (with limits, the admission's estimate is
reused when it was made from the same body) and the completion from the streamed text."""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx
import orjson
import pytest

from tests.e2e.conftest import new_key
from watchllm import core
from watchllm.testing.servers import Server


def _event(gateway: Server, key: str, request_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        r = httpx.get(f"{gateway.url}/v1/analytics/event/{request_id}",
                      headers={"authorization": f"Bearer {key}"}, timeout=10)
        if r.status_code == 200:
            body = r.json()
            return dict(body.get("event", body))
        time.sleep(0.3)
    raise AssertionError(f"no event for {request_id}")


@pytest.mark.parametrize("which", ["gateway", "limited"])
def test_a_stream_without_usage_is_counted(which: str, request: pytest.FixtureRequest) -> None:
    gateway: Server = request.getfixturevalue(which)
    key = new_key(gateway, f"counted-{which}", scopes=["proxy", "analytics"])
    body = {"model": "gpt-4o-mini", "stream": True, "messages": [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": f"Count me {uuid.uuid4().hex} — naïve café 数字"}]}
    rid = f"counted-{uuid.uuid4().hex}"
    with httpx.stream("POST", gateway.url + "/v1/chat/completions", json=body, timeout=10,
                      headers={"authorization": f"Bearer {key}", "x-request-id": rid,
                               "x-watchllm-cache-mode": "off"}) as r:
        assert r.status_code == 200
        raw = b"".join(r.iter_bytes())
    reported, text = core.stream_usage(raw)
    assert reported is None and text  # the mock sends no usage unless asked
    event = _event(gateway, key, rid)
    assert event["tokens_input"] == core.count_chat_tokens(orjson.dumps(body))
    assert event["tokens_output"] == core.count_tokens(text, "o200k_base")
