"""The benches' scale rows are real pass-throughs: issue 2's yardstick (granian + aiohttp)
and the gateway's transport without its features (`lean_passthrough.py`) answer what the
upstream answers, plain and streamed, so a bench cannot quietly measure a broken one."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import openai
import pytest

from watchllm.testing.servers import Server, free_port, start

BENCH = Path(__file__).resolve().parents[2] / "bench" / "load"
MSG = [{"role": "user", "content": "Name a colour"}]


def _bench_module(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module", params=["lean_passthrough.py", "aiohttp_passthrough.py"])
def passthrough(request: pytest.FixtureRequest, upstream: Server,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    port = free_port()
    server = start([str(BENCH / request.param), str(port), upstream.url], {}, port,
                   tmp_path_factory.mktemp("bench") / "server.log", "/_mock/stats")
    yield server
    server.stop()


def test_plain_and_streamed_answers_pass_through(passthrough: Server, upstream: Server) -> None:
    through = openai.OpenAI(base_url=f"{passthrough.url}/v1", api_key="sk-any", max_retries=0,
                         timeout=10)
    direct = openai.OpenAI(base_url=f"{upstream.url}/v1", api_key="sk-any", max_retries=0,
                         timeout=10)
    for client in (through, direct):
        reply = client.chat.completions.create(model="gpt-4o-mini", messages=MSG)
        assert reply.choices[0].message.content
    want = direct.chat.completions.create(model="gpt-4o-mini", messages=MSG)
    got = through.chat.completions.create(model="gpt-4o-mini", messages=MSG)
    assert got.choices[0].message.content == want.choices[0].message.content

    def streamed(client: openai.OpenAI) -> list[str]:
        return [c.choices[0].delta.content or "" for c in client.chat.completions.create(
            model="gpt-4o-mini", messages=MSG, stream=True,
            extra_body={"mock": {"chunk_delay_ms": 5}}) if c.choices]

    pieces = streamed(through)
    assert pieces == streamed(direct) and len(pieces) > 2


def test_the_ttfb_bench_times_the_first_event(upstream: Server) -> None:
    """`bench/load/ttfb.py` times a stream's first `data:`, not the request's send nor the
    answer's end: with the upstream 60 ms to its first event and 8 more 15 ms apart, that
    is after the 60 ms and well before the end."""
    ttfb = _bench_module("ttfb")
    body = json.dumps({"model": "gpt-4o-mini", "messages": MSG, "stream": True,
                       "mock": {"latency_ms": 60, "chunk_delay_ms": 15}}).encode()
    client = ttfb.Client(upstream.port, {}, body)
    for _ in range(2):  # the same kept-alive connection answers again
        first, last = client.stream()
        assert 60 <= first < 60 + 100
        assert last - first >= 8 * 15


def test_the_ttfb_bench_stops_at_an_error_answer(upstream: Server) -> None:
    """An answer that is not a streamed 200 fails the bench at once instead of leaving it
    waiting for a last chunk that never comes."""
    ttfb = _bench_module("ttfb")
    body = json.dumps({"model": "gpt-4o-mini", "messages": MSG, "stream": True,
                       "mock": {"status": 429}}).encode()
    client = ttfb.Client(upstream.port, {}, body)
    client.sock.settimeout(10)
    with pytest.raises(RuntimeError, match="429"):
        client.stream()
