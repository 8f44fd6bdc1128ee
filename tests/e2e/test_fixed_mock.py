"""The benches' fixed-answer mock upstream: its precomputed stream is the scripted mock's
stream for the same request (but for each answer's own id and time), and a valid OpenAI
stream for the SDK."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import orjson
import pytest

from watchllm.testing.servers import Server, start_mock_upstream

# The request the fixed mock answers, whatever it is sent
FIXED = {"model": "mock-1", "messages": [{"role": "user", "content": "hello"}]}


@pytest.fixture(scope="module")
def fixed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_mock_upstream(Path(tmp_path_factory.mktemp("fixed")), fixed=True)
    yield server
    server.stop()


@pytest.mark.parametrize("usage", [False, True])
def test_the_fixed_stream_is_the_scripted_one(fixed: Server, upstream: Server,
                                              usage: bool) -> None:
    body = {**FIXED, "stream": True}
    if usage:
        body["stream_options"] = {"include_usage": True}
    answers = [httpx.post(f"{s.url}/v1/chat/completions", json=body, timeout=10)
               for s in (fixed, upstream)]
    for r in answers:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        assert "content-length" not in r.headers  # streamed (chunked), as the scripted one
    fixed_events, scripted_events = (_events(r.content) for r in answers)
    assert fixed_events == scripted_events
    assert len(fixed_events) >= 3
    assert sum("usage" in e for e in fixed_events[:-1]) == int(usage)
    assert fixed_events[-1] == "[DONE]"


def _events(body: bytes) -> list[object]:
    """Each event's data, parsed, without the answer's id and time (new per answer)."""
    events: list[object] = []
    for block in body.split(b"\n\n")[:-1]:
        assert block.startswith(b"data: ")
        data = block.removeprefix(b"data: ")
        if data == b"[DONE]":
            events.append("[DONE]")
            continue
        event = orjson.loads(data)
        del event["id"], event["created"]
        events.append(event)
    return events


def test_the_sdk_reads_the_fixed_stream(fixed: Server) -> None:
    client = openai.OpenAI(base_url=fixed.url + "/v1", api_key="sk-any")
    whole = client.chat.completions.create(model="gpt-4o-mini",
                                           messages=[{"role": "user", "content": "hi"}])
    chunks = list(client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True,
        stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens  # type: ignore[union-attr]
