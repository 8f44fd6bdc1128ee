"""A mock LLM provider over HTTP (OpenAI and Anthropic wire formats), for tests and benches.

    python -m watchllm.testing.mock_upstream --port 9999 [--fixed]

It answers exactly like the in-process `mock` provider, counts what it receives
(`GET /_mock/stats`, `POST /_mock/reset`), notices clients that hang up mid-stream, and
follows the `mock` script object in request bodies (status, retry_after, latency_ms,
chunk_delay_ms, chunks, content, tool_call, fail_first + fail_key). `--fixed` answers every
chat request with one precomputed answer: the cheapest possible upstream, for benchmarks. A
request that asks to stream gets the events the scripted mock sends for a short chat (8
chunks, the usage chunk if `stream_options` asks for it, `[DONE]`), precomputed, each
written as the scripted mock writes it (one body message per event), without the watch for
a hang-up: so that a stream bench measures the gateway at its own saturation, not the
upstream's (the scripted mock's stream, sharing the load generator's core, tops out below
the gateway's rate and leaves the gateway's core idle part of the time).
`--provider-headers`: its answers carry the headers OpenAI's API sends with every one (a
request id, its processing time and its own `x-ratelimit-*` limits; fixed values here), so
the gateway forwards what it would in front of the real provider. The tests run it so;
benches choose (their featureless yardsticks forward no headers).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import time
from collections import Counter
from typing import Any

import orjson

from watchllm.http.asgi import Receive, Request, Scope, Send, send_body
from watchllm.proxy import mock, sse

_JSON = [(b"content-type", b"application/json")]
# What OpenAI sends with every completion (the values are the provider's, not ours).
_OPENAI = [(b"x-request-id", b"req_0f3e9c1d2b4a5e6f7a8b9c0d1e2f3a4b"),
           (b"openai-processing-ms", b"312"), (b"openai-version", b"2020-10-01"),
           (b"x-ratelimit-limit-requests", b"10000"), (b"x-ratelimit-limit-tokens", b"30000000"),
           (b"x-ratelimit-remaining-requests", b"9999"),
           (b"x-ratelimit-remaining-tokens", b"29999980"),
           (b"x-ratelimit-reset-requests", b"6ms"), (b"x-ratelimit-reset-tokens", b"0s")]
_SSE = [(b"content-type", b"text/event-stream")]


class MockUpstream:
    def __init__(self, fixed: bool = False, provider_headers: bool = False) -> None:
        self.fixed = fixed
        self.provider_headers = provider_headers
        self._answer = _JSON + _OPENAI if provider_headers else _JSON
        self._sse = _SSE + _OPENAI if provider_headers else _SSE
        self.requests: Counter[str] = Counter()
        self.cancelled = 0
        self.completed_streams = 0
        self.failures: Counter[str] = Counter()
        self.last_body: dict[str, Any] = {}
        self.last_headers: dict[str, str] = {}
        fixed_request = {"model": "mock-1", "messages": [{"role": "user", "content": "hello"}]}
        self._fixed_body = orjson.dumps(mock.chat_completion(fixed_request))
        # The stream, without and with the usage chunk (as the request's stream_options ask)
        asked: list[dict[str, Any]] = [{}, {"stream_options": {"include_usage": True}}]
        self._fixed_events = [
            [*(sse.encode(orjson.dumps(c)) for c in mock.chat_chunks(
                {**fixed_request, "stream": True, **options})), sse.encode(sse.DONE)]
            for options in asked]

    def stats(self) -> dict[str, Any]:
        return {"requests": dict(self.requests), "total": sum(self.requests.values()),
                "cancelled": self.cancelled, "completed_streams": self.completed_streams,
                "last_body": self.last_body, "last_headers": self.last_headers}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        req = Request(scope, receive)
        if self.fixed and req.path == "/v1/chat/completions":
            body = await req.body(1 << 24)
            self.requests[req.path] += 1
            data = orjson.loads(body) if b'"stream"' in body else {}
            if data.get("stream") is True:
                options = data.get("stream_options")
                usage = isinstance(options, dict) and options.get("include_usage") is True
                await self._stream(self._fixed_events[usage], 0.0, receive, send, watch=False)
                return
            await send_body(send, 200, self._fixed_body, self._answer)
            return
        if req.path == "/_mock/stats":
            await send_body(send, 200, orjson.dumps(self.stats()), _JSON)
            return
        if req.path == "/_mock/reset":
            self.__init__(self.fixed, self.provider_headers)  # type: ignore[misc]
            await send_body(send, 200, b"{}", _JSON)
            return
        if req.path == "/v1/models":
            data = [{"id": m, "object": "model", "created": 0, "owned_by": "mock"}
                    for m in ("gpt-4o-mini", "gpt-4o", "text-embedding-3-small")]
            await send_body(send, 200, orjson.dumps({"object": "list", "data": data}), _JSON)
            return
        data = orjson.loads(await req.body(1 << 26) or b"{}")
        self.requests[req.path] += 1
        self.last_body, self.last_headers = data, dict(req.headers)
        if await self._scripted_failure(data, send):
            return
        if req.path == "/v1/messages":
            await self._anthropic(data, receive, send)
            return
        endpoint = req.path.removeprefix("/v1/")
        if endpoint not in mock.BODIES:
            await send_body(send, 404, b'{"error":{"message":"no such mock endpoint"}}', _JSON)
            return
        script = data.get("mock") if isinstance(data.get("mock"), dict) else {}
        if script.get("latency_ms"):
            await asyncio.sleep(float(script["latency_ms"]) / 1000)
        if data.get("stream") and endpoint == "chat/completions":
            events = [sse.encode(orjson.dumps(c)) for c in mock.chat_chunks(data)]
            events.append(sse.encode(sse.DONE))
            await self._stream(events, float(script.get("chunk_delay_ms", 0)) / 1000, receive,
                               send)
            return
        await send_body(send, 200, orjson.dumps(mock.BODIES[endpoint](data)), self._answer)

    async def _scripted_failure(self, data: dict[str, Any], send: Send) -> bool:
        script = data.get("mock") if isinstance(data.get("mock"), dict) else None
        if not script:
            return False
        if "fail_first" in script:  # fail the first N calls carrying this fail_key, then succeed
            key = str(script.get("fail_key", ""))
            self.failures[key] += 1
            if self.failures[key] > int(script["fail_first"]):
                return False
        error = mock.scripted_error(data)
        if error is None:
            return False
        status, headers, body = error
        await send_body(send, status, body, [(k.encode(), v.encode()) for k, v in headers.items()])
        return True

    async def _stream(self, events: list[bytes], delay: float, receive: Receive,
                      send: Send, watch: bool = True) -> None:
        """`watch`: a task notices a hang-up between events (the benches' fixed stream
        goes without it: a send to a client that is gone fails anyway)."""
        gone = asyncio.Event()

        async def watch_disconnect() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            gone.set()

        watcher = asyncio.ensure_future(watch_disconnect()) if watch else None
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self._sse})
            for event in events:
                await send({"type": "http.response.body", "body": event, "more_body": True})
                if delay:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(gone.wait(), delay)
                if gone.is_set():
                    self.cancelled += 1
                    return
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            self.completed_streams += 1
        except (OSError, RuntimeError):
            self.cancelled += 1
        finally:
            if watcher is not None:
                watcher.cancel()

    async def _anthropic(self, data: dict[str, Any], receive: Receive, send: Send) -> None:
        if not isinstance(data.get("max_tokens"), int) or not data.get("messages"):
            err = {"type": "error", "error": {"type": "invalid_request_error",
                                              "message": "max_tokens and messages are required"}}
            await send_body(send, 400, orjson.dumps(err), _JSON)
            return
        as_openai = {"model": data["model"], "messages": data["messages"],
                     "mock": data.get("mock") or {}}
        text = mock.reply_text(as_openai)
        usage = {"input_tokens": 11, "output_tokens": len(text.split())}
        msg_id = f"msg_{time.time_ns()}"
        tool = _forced_tool(data)
        content: list[dict[str, Any]] = [{"type": "text", "text": text}]
        if tool:
            content.append({"type": "tool_use", "id": "toolu_1", "name": tool["name"],
                            "input": orjson.loads(tool.get("arguments", "{}"))})
        stop = "tool_use" if tool else "end_turn"
        if not data.get("stream"):
            body = {"id": msg_id, "type": "message", "role": "assistant", "model": data["model"],
                    "content": content, "stop_reason": stop, "usage": usage}
            await send_body(send, 200, orjson.dumps(body), _JSON)
            return

        def ev(kind: str, payload: dict[str, Any]) -> bytes:
            return sse.encode(orjson.dumps({"type": kind, **payload}), kind)

        events = [ev("message_start", {"message": {
            "id": msg_id, "type": "message", "role": "assistant", "model": data["model"],
            "content": [], "usage": {"input_tokens": 11, "output_tokens": 0}}}),
            ev("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}),
            ev("ping", {})]
        events += [ev("content_block_delta", {"index": 0, "delta": {
            "type": "text_delta", "text": w if i == 0 else " " + w}})
            for i, w in enumerate(text.split(" "))]
        events.append(ev("content_block_stop", {"index": 0}))
        if tool:
            events.append(ev("content_block_start", {"index": 1, "content_block": {
                "type": "tool_use", "id": "toolu_1", "name": tool["name"], "input": {}}}))
            args = tool.get("arguments", "{}")
            events += [ev("content_block_delta", {"index": 1, "delta": {
                "type": "input_json_delta", "partial_json": args[i:i + 5]}})
                for i in range(0, len(args), 5)]
            events.append(ev("content_block_stop", {"index": 1}))
        events.append(ev("message_delta", {"delta": {"stop_reason": stop},
                                           "usage": {"output_tokens": usage["output_tokens"]}}))
        events.append(ev("message_stop", {}))
        script = data.get("mock") or {}
        await self._stream(events, float(script.get("chunk_delay_ms", 0)) / 1000, receive, send)


def _forced_tool(data: dict[str, Any]) -> dict[str, Any] | None:
    """When tool use is required, call the (named or first) tool with "mock" arguments."""
    choice = data.get("tool_choice") or {}
    if not data.get("tools") or choice.get("type") not in ("any", "tool"):
        return None
    tool = next((t for t in data["tools"] if t["name"] == choice.get("name")), data["tools"][0])
    props = (tool.get("input_schema") or {}).get("properties") or {}
    return {"name": tool["name"], "arguments": orjson.dumps({p: "mock" for p in props}).decode()}


app = MockUpstream(fixed=os.environ.get("WATCHLLM_MOCK_FIXED") == "1",
                   provider_headers=os.environ.get("WATCHLLM_MOCK_PROVIDER_HEADERS") == "1")


def main() -> None:
    from granian import Granian
    from granian.constants import Interfaces, Loops, RuntimeModes

    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=9999)
    p.add_argument("--fixed", action="store_true")
    p.add_argument("--provider-headers", action="store_true")
    args = p.parse_args()
    if args.fixed:
        os.environ["WATCHLLM_MOCK_FIXED"] = "1"
    if args.provider_headers:
        os.environ["WATCHLLM_MOCK_PROVIDER_HEADERS"] = "1"
    Granian("watchllm.testing.mock_upstream:app", address=args.host, port=args.port,
            interface=Interfaces.ASGI, loop=Loops.uvloop, runtime_mode=RuntimeModes.st,
            log_access=False, log_level="warning").serve()  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
