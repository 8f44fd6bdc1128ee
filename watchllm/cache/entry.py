"""Cache entries: what is stored, and how it is replayed for either kind of request.

A streamed response is stored as its chunk sequence (minus the usage-only chunk, whose
presence depends on the request's `stream_options`), a non-streamed one as its JSON body.
Either can answer either kind of request:
- stream entry -> JSON request: the chunks are assembled into one chat.completion;
- JSON entry -> stream request: a synthetic stream (role, content, tool calls, finish);
- usage chunk emitted exactly when the replaying request asked for it.

Entries carry FORMAT_VERSION; anything else (an older WatchLLM's entry) reads as a miss.
"""

from __future__ import annotations

import time
import zlib
from dataclasses import dataclass, field
from typing import Any

import orjson

from watchllm.proxy import sse

FORMAT_VERSION = 1
_RAW, _ZLIB = b"\x00", b"\x01"
_COMPRESS_OVER = 2048  # bytes; smaller entries are not worth the CPU


@dataclass(slots=True)
class CacheEntry:
    endpoint: str
    body: bytes | None = None  # a complete JSON response
    chunks: list[dict[str, Any]] | None = None  # a chat stream's chunks
    usage: dict[str, Any] | None = None
    query: str | None = None  # the embedded text (semantic cache verification)
    created: float = field(default_factory=time.time)
    cost_usd: float = 0.0
    # Replay bodies, rendered once per decoded entry (entries are read-only once stored).
    rendered: dict[object, bytes] = field(default_factory=dict, repr=False, compare=False)

    def encode(self) -> bytes:
        doc = {"v": FORMAT_VERSION, "e": self.endpoint, "c": self.created, "u": self.usage,
               "q": self.query, "k": self.cost_usd,
               "b": self.body.decode() if self.body is not None else None, "s": self.chunks}
        raw = orjson.dumps(doc)
        if len(raw) > _COMPRESS_OVER:
            return _ZLIB + zlib.compress(raw, 1)
        return _RAW + raw

    @staticmethod
    def decode(data: bytes) -> CacheEntry | None:
        try:
            raw = zlib.decompress(data[1:]) if data[:1] == _ZLIB else data[1:]
            doc = orjson.loads(raw)
        except (zlib.error, orjson.JSONDecodeError):
            return None
        if not isinstance(doc, dict) or doc.get("v") != FORMAT_VERSION:
            return None
        body = doc.get("b")
        return CacheEntry(doc["e"], body.encode() if body is not None else None, doc.get("s"),
                          doc.get("u"), doc.get("q"), doc.get("c", 0.0), doc.get("k", 0.0))


def age_s(created: float) -> int:
    """Whole seconds since an entry was stored (the `Age` header)."""
    return max(0, int(time.time() - created))


def entry_from_stream(endpoint: str, raw: bytes) -> CacheEntry | None:
    """An entry from a complete SSE stream; None if it is not a well-formed, finished one."""
    values, invalid, done = sse.json_events(raw)
    if invalid:
        return None
    chunks: list[dict[str, Any]] = []
    usage = None
    finished = False
    for chunk in values:
        if not isinstance(chunk, dict) or "error" in chunk:
            return None
        if chunk.get("usage"):
            usage = chunk["usage"]
        if choices := chunk.get("choices"):
            if not isinstance(choices, list):
                return None
            finished = finished or any(isinstance(c, dict) and c.get("finish_reason")
                                       for c in choices)
            chunks.append({k: v for k, v in chunk.items() if k != "usage"})
    if not (done and finished):
        return None  # truncated: never cache a partial answer
    return CacheEntry(endpoint, chunks=chunks, usage=usage)


def _merge_tool_call(calls: dict[int, dict[str, Any]], delta: dict[str, Any]) -> None:
    index = delta.get("index", 0)
    call = calls.setdefault(index, {"id": None, "type": "function",
                                    "function": {"name": "", "arguments": ""}})
    if delta.get("id"):
        call["id"] = delta["id"]
    fn = delta.get("function") or {}
    if fn.get("name"):
        call["function"]["name"] += fn["name"]
    if fn.get("arguments"):
        call["function"]["arguments"] += fn["arguments"]


def assemble(chunks: list[dict[str, Any]], usage: dict[str, Any] | None) -> dict[str, Any]:
    """Chat-completion chunks -> the chat.completion they add up to."""
    first = chunks[0] if chunks else {}
    choices: dict[int, dict[str, Any]] = {}
    tools: dict[int, dict[int, dict[str, Any]]] = {}
    for chunk in chunks:
        for c in chunk.get("choices", []):
            i = c.get("index", 0)
            choice = choices.setdefault(i, {"index": i, "message": {"role": "assistant",
                                                                     "content": None},
                                            "logprobs": None, "finish_reason": None})
            msg = choice["message"]
            delta = c.get("delta") or {}
            for name, value in delta.items():
                if name == "tool_calls":
                    for d in value or []:
                        _merge_tool_call(tools.setdefault(i, {}), d)
                elif name == "role":
                    msg["role"] = value
                elif isinstance(value, str):  # content, refusal, reasoning_content, ...
                    msg[name] = (msg.get(name) or "") + value
                elif value is not None:
                    msg[name] = value
            if c.get("finish_reason"):
                choice["finish_reason"] = c["finish_reason"]
            if c.get("logprobs"):
                lp = choice["logprobs"] or {"content": []}
                lp["content"] = (lp.get("content") or []) + (c["logprobs"].get("content") or [])
                choice["logprobs"] = lp
    for i, calls in tools.items():
        choices[i]["message"]["tool_calls"] = [calls[k] for k in sorted(calls)]
    out = {"id": first.get("id"), "object": "chat.completion", "created": first.get("created"),
           "model": first.get("model"), "choices": [choices[i] for i in sorted(choices)]}
    if first.get("system_fingerprint"):
        out["system_fingerprint"] = first["system_fingerprint"]
    if usage:
        out["usage"] = usage
    return out


def synthesize(completion: dict[str, Any]) -> list[dict[str, Any]]:
    """A chat.completion -> an equivalent chunk sequence (without the usage chunk)."""
    base = {"id": completion.get("id"), "object": "chat.completion.chunk",
            "created": completion.get("created"), "model": completion.get("model")}
    if completion.get("system_fingerprint"):
        base["system_fingerprint"] = completion["system_fingerprint"]
    chunks = []
    for choice in completion.get("choices", []):
        i = choice.get("index", 0)
        msg = dict(choice.get("message") or {})
        calls = msg.pop("tool_calls", None) or []
        first: dict[str, Any] = {"role": msg.pop("role", "assistant"), "content": ""}
        chunks.append({**base, "choices": [{"index": i, "delta": first, "logprobs": None,
                                            "finish_reason": None}]})
        delta = {k: v for k, v in msg.items() if v is not None}
        if delta:
            chunks.append({**base, "choices": [{"index": i, "delta": delta,
                                                "logprobs": choice.get("logprobs"),
                                                "finish_reason": None}]})
        for n, call in enumerate(calls):
            chunks.append({**base, "choices": [{"index": i, "delta": {"tool_calls": [
                {"index": n, **call}]}, "logprobs": None, "finish_reason": None}]})
        chunks.append({**base, "choices": [{"index": i, "delta": {}, "logprobs": None,
                                            "finish_reason": choice.get("finish_reason")}]})
    return chunks


def as_json(entry: CacheEntry) -> bytes:
    if entry.body is not None:
        return entry.body
    body = entry.rendered.get("json")
    if body is None:
        body = entry.rendered["json"] = orjson.dumps(assemble(entry.chunks or [], entry.usage))
    return body


def sse_body(entry: CacheEntry, include_usage: bool) -> bytes:
    """The whole replayed stream as one body (rendered once per entry and usage choice)."""
    body = entry.rendered.get(include_usage)
    if body is None:
        body = entry.rendered[include_usage] = b"".join(as_sse(entry, include_usage))
    return body


def as_sse(entry: CacheEntry, include_usage: bool) -> list[bytes]:
    if entry.chunks is not None:
        chunks = entry.chunks
    else:
        chunks = synthesize(orjson.loads(entry.body or b"{}"))
    out = [sse.encode(orjson.dumps(c)) for c in chunks]
    if include_usage and entry.usage and chunks:
        base = chunks[0]
        out.append(sse.encode(orjson.dumps({
            "id": base.get("id"), "object": "chat.completion.chunk",
            "created": base.get("created"), "model": base.get("model"), "choices": [],
            "usage": entry.usage})))
    out.append(sse.encode(sse.DONE))
    return out
