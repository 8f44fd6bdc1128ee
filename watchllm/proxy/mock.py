"""The built-in deterministic `mock` provider: demos, tests and benchmarks without a key.

The same functions back the HTTP mock upstream (`watchllm.testing.mock_upstream`), so the
in-process provider and the over-the-wire one answer identically. A request may carry a
`mock` object to script behaviour: ``{"status": 429, "retry_after": 1, "chunk_delay_ms": 50,
"chunks": 5, "content": "...", "latency_ms": 20, "tool_call": {"name": ..., "arguments": ...}}``.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import struct
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson

from watchllm import core
from watchllm.proxy import sse
from watchllm.proxy.base import UpstreamCall, UpstreamResult

_JSON = {"content-type": "application/json"}
_SSE = {"content-type": "text/event-stream"}


def _digest(*parts: str) -> str:
    return hashlib.blake2b("\x00".join(parts).encode(), digest_size=12).hexdigest()


def _last_user_text(data: dict[str, Any]) -> str:
    for msg in reversed(data.get("messages") or []):
        if isinstance(msg, dict) and msg.get("role") == "user":
            content = msg.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                return " ".join(
                    p.get("text", "") for p in content if isinstance(p, dict) and "text" in p
                )
    prompt = data.get("prompt") or data.get("input")
    return prompt if isinstance(prompt, str) else ""


def _script(data: dict[str, Any]) -> dict[str, Any]:
    script = data.get("mock")
    return script if isinstance(script, dict) else {}


def reply_text(data: dict[str, Any]) -> str:
    script = _script(data)
    if isinstance(script.get("content"), str):
        return str(script["content"])
    text = " ".join(_last_user_text(data).split())[:200]
    return f"Mock answer [{_digest(str(data.get('model')), text)[:8]}] to: {text}"


def _usage(data: dict[str, Any], text: str) -> dict[str, int]:
    model = str(data.get("model", ""))
    try:
        prompt = core.count_chat_tokens(data) if "messages" in data else 0
    except ValueError:
        prompt = 0
    completion = core.count_tokens(text, core.encoding_for_model(model))
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion}


def chat_completion(data: dict[str, Any]) -> dict[str, Any]:
    text = reply_text(data)
    tool = _script(data).get("tool_call")
    message: dict[str, Any] = {"role": "assistant", "content": None if tool else text,
                               "refusal": None}
    finish = "stop"
    if isinstance(tool, dict):
        message["tool_calls"] = [{"id": "call_" + _digest(text)[:16], "type": "function",
                                  "function": {"name": tool.get("name", "tool"),
                                               "arguments": tool.get("arguments", "{}")}}]
        finish = "tool_calls"
    return {
        "id": "chatcmpl-" + _digest(text, str(time.time_ns())),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": data.get("model"),
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
        "usage": _usage(data, text),
        "system_fingerprint": "fp_mock",
    }


def chat_chunks(data: dict[str, Any]) -> list[dict[str, Any]]:
    """The streamed form of `chat_completion`, chunk by chunk."""
    full = chat_completion(data)
    base = {"id": full["id"], "object": "chat.completion.chunk", "created": full["created"],
            "model": full["model"], "system_fingerprint": "fp_mock"}
    message = full["choices"][0]["message"]
    n = max(1, int(_script(data).get("chunks", 0)) or 8)
    deltas: list[dict[str, Any]] = [{"role": "assistant", "content": ""}]
    if message.get("tool_calls"):
        call = message["tool_calls"][0]
        args = call["function"]["arguments"]
        deltas.append({"tool_calls": [{"index": 0, "id": call["id"], "type": "function",
                                       "function": {"name": call["function"]["name"],
                                                    "arguments": ""}}]})
        step = math.ceil(len(args) / n) or 1
        deltas += [{"tool_calls": [{"index": 0, "function": {"arguments": args[i:i + step]}}]}
                   for i in range(0, len(args), step)]
    else:
        text = message["content"]
        words = text.split(" ")
        step = math.ceil(len(words) / n)
        parts = [" ".join(words[i:i + step]) for i in range(0, len(words), step)]
        deltas += [{"content": p if i == 0 else " " + p} for i, p in enumerate(parts)]
    chunks = [{**base, "choices": [{"index": 0, "delta": d, "logprobs": None,
                                    "finish_reason": None}]} for d in deltas]
    chunks.append({**base, "choices": [{"index": 0, "delta": {}, "logprobs": None,
                                        "finish_reason": full["choices"][0]["finish_reason"]}]})
    options = data.get("stream_options")
    if isinstance(options, dict) and options.get("include_usage"):
        chunks.append({**base, "choices": [], "usage": full["usage"]})
    return chunks


def completion(data: dict[str, Any]) -> dict[str, Any]:
    text = reply_text(data)
    return {"id": "cmpl-" + _digest(text), "object": "text_completion",
            "created": int(time.time()), "model": data.get("model"),
            "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": "stop"}],
            "usage": _usage(data, text)}


def embedding_vector(text: str, dims: int) -> list[float]:
    """A deterministic unit vector: equal texts embed equally, different texts don't."""
    seed = hashlib.sha256(text.encode()).digest()
    raw = b"".join(hashlib.sha256(seed + i.to_bytes(4, "little")).digest()
                   for i in range(math.ceil(dims * 4 / 32)))
    values = [v / 2**31 - 1.0 for v in struct.unpack(f"<{dims}I", raw[: dims * 4])]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [v / norm for v in values]


def embeddings(data: dict[str, Any]) -> dict[str, Any]:
    inputs = data.get("input")
    items = inputs if isinstance(inputs, list) else [inputs]
    dims = int(data.get("dimensions") or 1536)
    out = [{"object": "embedding", "index": i, "embedding": embedding_vector(str(t), dims)}
           for i, t in enumerate(items)]
    tokens = sum(core.count_tokens(str(t), "cl100k_base") for t in items)
    return {"object": "list", "data": out, "model": data.get("model"),
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


def responses(data: dict[str, Any]) -> dict[str, Any]:
    text = reply_text(data)
    usage = _usage(data, text)
    return {"id": "resp_" + _digest(text), "object": "response", "created_at": int(time.time()),
            "status": "completed", "model": data.get("model"),
            "output": [{"type": "message", "id": "msg_" + _digest(text)[:16], "role": "assistant",
                        "status": "completed",
                        "content": [{"type": "output_text", "text": text, "annotations": []}]}],
            "usage": {"input_tokens": usage["prompt_tokens"],
                      "output_tokens": usage["completion_tokens"],
                      "total_tokens": usage["total_tokens"]}}


def scripted_error(data: dict[str, Any]) -> tuple[int, dict[str, str], bytes] | None:
    script = _script(data)
    status = script.get("status")
    if not isinstance(status, int) or status < 400:
        return None
    headers = dict(_JSON)
    if "retry_after" in script:
        headers["retry-after"] = str(script["retry_after"])
    body = orjson.dumps({"error": {"message": script.get("error", f"mock error {status}"),
                                   "type": "mock_error", "param": None, "code": None}})
    return status, headers, body


BODIES = {"chat/completions": chat_completion, "completions": completion,
          "embeddings": embeddings, "responses": responses}


async def sse_stream(chunks: list[dict[str, Any]], delay_s: float) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield sse.encode(orjson.dumps(chunk))
        if delay_s:
            await asyncio.sleep(delay_s)
    yield sse.encode(sse.DONE)


class MockProvider:
    name = "mock"
    kind = "mock"

    def __init__(self, latency_ms: float = 0.0) -> None:
        self.latency_s = latency_ms / 1000

    def supports(self, endpoint: str) -> bool:
        return endpoint in BODIES

    async def send(self, call: UpstreamCall, connect_timeout: float,
                   read_timeout: float) -> UpstreamResult:
        script = _script(call.data)
        latency = float(script.get("latency_ms", 0)) / 1000 or self.latency_s
        if latency:
            await asyncio.sleep(latency)
        error = scripted_error(call.data)
        if error:
            return UpstreamResult(error[0], error[1], body=error[2])
        if call.stream and call.endpoint == "chat/completions":
            delay = float(script.get("chunk_delay_ms", 0)) / 1000
            return UpstreamResult(200, dict(_SSE), chunks=sse_stream(chat_chunks(call.data), delay))
        return UpstreamResult(200, dict(_JSON), body=orjson.dumps(BODIES[call.endpoint](call.data)))
