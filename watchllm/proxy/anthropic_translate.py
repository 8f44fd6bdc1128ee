"""Chat Completions <-> Anthropic Messages, both directions, streaming included.

Pure functions (no I/O) so they are tested directly and reused by the mock upstream.
"""

from __future__ import annotations

import base64
import time
from typing import Any

import orjson

from watchllm.errors import InvalidRequestError
from watchllm.proxy import sse

DEFAULT_MAX_TOKENS = 4096
_FINISH = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length",
           "tool_use": "tool_calls", "pause_turn": "stop", "refusal": "content_filter"}
_PASS = ("temperature", "top_p", "top_k")


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def _image_block(part: dict[str, Any]) -> dict[str, Any]:
    url = (part.get("image_url") or {}).get("url", "")
    if url.startswith("data:"):
        header, _, data = url.partition(",")
        media = header[5:].split(";")[0] or "image/png"
        base64.b64decode(data[:8] + "=" * (-len(data[:8]) % 4))  # cheap sanity check
        return {"type": "image", "source": {"type": "base64", "media_type": media, "data": data}}
    return {"type": "image", "source": {"type": "url", "url": url}}


def _content_blocks(content: Any, where: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    if not isinstance(content, list):
        raise InvalidRequestError(f"{where}.content must be a string or an array", param=where)
    blocks = []
    for i, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            blocks.append({"type": "text", "text": part.get("text", "")})
        elif kind == "image_url":
            blocks.append(_image_block(part))
        else:
            raise InvalidRequestError(
                f"{where}.content[{i}]: part type {kind!r} is not supported by Anthropic",
                param=f"{where}.content[{i}].type")
    return blocks


def _parse_args(raw: Any, where: str) -> Any:
    if isinstance(raw, dict):
        return raw
    try:
        return orjson.loads(raw or "{}")
    except orjson.JSONDecodeError:
        raise InvalidRequestError(f"{where}: arguments are not valid JSON", param=where) from None


def to_messages_request(data: dict[str, Any], model: str, stream: bool) -> dict[str, Any]:
    """An OpenAI chat request as an Anthropic Messages request."""
    system: list[str] = []
    messages: list[dict[str, Any]] = []
    for i, msg in enumerate(data.get("messages") or []):
        where = f"messages[{i}]"
        role = msg.get("role") if isinstance(msg, dict) else None
        if role in ("system", "developer"):
            system.append(_text_of(msg.get("content")))
        elif role == "user":
            messages.append({"role": "user",
                             "content": _content_blocks(msg.get("content", ""), where)})
        elif role == "assistant":
            blocks = _content_blocks(msg.get("content") or "", where)
            for j, call in enumerate(msg.get("tool_calls") or []):
                fn = call.get("function") or {}
                blocks.append({"type": "tool_use", "id": call.get("id"), "name": fn.get("name"),
                               "input": _parse_args(fn.get("arguments"),
                                                    f"{where}.tool_calls[{j}]")})
            messages.append({"role": "assistant", "content": blocks})
        elif role == "tool":
            result = {"type": "tool_result", "tool_use_id": msg.get("tool_call_id"),
                      "content": _text_of(msg.get("content"))}
            # Consecutive tool results belong in one user turn.
            last = messages[-1] if messages else None
            if last and last["role"] == "user" and all(
                    b.get("type") == "tool_result" for b in last["content"]):
                last["content"].append(result)
            else:
                messages.append({"role": "user", "content": [result]})
        else:
            raise InvalidRequestError(f"{where}.role {role!r} is not supported",
                                      param=f"{where}.role")
    out: dict[str, Any] = {
        "model": model,
        "messages": messages,
        "max_tokens": data.get("max_completion_tokens") or data.get("max_tokens")
        or DEFAULT_MAX_TOKENS,
    }
    if system:
        out["system"] = "\n\n".join(system)
    for name in _PASS:
        if data.get(name) is not None:
            out[name] = data[name]
    stop = data.get("stop")
    if stop:
        out["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    if data.get("tools"):
        out["tools"] = [{"name": t["function"]["name"],
                         "description": t["function"].get("description", ""),
                         "input_schema": t["function"].get("parameters")
                         or {"type": "object", "properties": {}}}
                        for t in data["tools"] if t.get("type") == "function"]
    choice = data.get("tool_choice")
    if choice == "auto":
        out["tool_choice"] = {"type": "auto"}
    elif choice == "required":
        out["tool_choice"] = {"type": "any"}
    elif choice == "none":
        out["tool_choice"] = {"type": "none"}
    elif isinstance(choice, dict) and choice.get("type") == "function":
        out["tool_choice"] = {"type": "tool", "name": choice["function"]["name"]}
    if isinstance(data.get("user"), str):
        out["metadata"] = {"user_id": data["user"]}
    if stream:
        out["stream"] = True
    return out


def _usage(u: dict[str, Any]) -> dict[str, Any]:
    cached = u.get("cache_read_input_tokens") or 0
    prompt = (u.get("input_tokens") or 0) + cached + (u.get("cache_creation_input_tokens") or 0)
    completion = u.get("output_tokens") or 0
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached}}


def to_chat_completion(msg: dict[str, Any], model: str) -> dict[str, Any]:
    """An Anthropic Messages response as an OpenAI chat completion."""
    text = "".join(b.get("text", "") for b in msg.get("content", []) if b.get("type") == "text")
    calls = [{"id": b["id"], "type": "function",
              "function": {"name": b["name"],
                           "arguments": orjson.dumps(b.get("input", {})).decode()}}
             for b in msg.get("content", []) if b.get("type") == "tool_use"]
    message: dict[str, Any] = {"role": "assistant", "content": text or (None if calls else ""),
                               "refusal": None}
    if calls:
        message["tool_calls"] = calls
    return {
        "id": msg.get("id", ""),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": None,
                     "finish_reason": _FINISH.get(msg.get("stop_reason") or "", "stop")}],
        "usage": _usage(msg.get("usage") or {}),
    }


def error_message(body: bytes) -> str:
    try:
        err = orjson.loads(body).get("error") or {}
        return str(err.get("message") or body[:500].decode("utf-8", "replace"))
    except (orjson.JSONDecodeError, AttributeError):
        return body[:500].decode("utf-8", "replace")


class StreamTranslator:
    """Anthropic SSE events in, OpenAI `chat.completion.chunk` SSE bytes out."""

    def __init__(self, model: str, include_usage: bool) -> None:
        self.model = model
        self.include_usage = include_usage
        self.decoder = sse.SSEDecoder()
        self.id = ""
        self.created = int(time.time())
        self.usage: dict[str, Any] = {}
        self.tool_index: dict[int, int] = {}  # Anthropic block index -> OpenAI tool_call index
        self.finish: str | None = None

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        return sse.encode(orjson.dumps({
            "id": self.id, "object": "chat.completion.chunk", "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }))

    def feed(self, raw: bytes) -> bytes:
        out: list[bytes] = []
        for event, data in self.decoder.feed(raw):
            out.extend(self._event(event, orjson.loads(data)))
        return b"".join(out)

    def _event(self, event: str, ev: dict[str, Any]) -> list[bytes]:
        kind = ev.get("type", event)
        if kind == "message_start":
            msg = ev.get("message", {})
            self.id = msg.get("id", "")
            self.usage.update(msg.get("usage") or {})
            return [self._chunk({"role": "assistant", "content": ""})]
        if kind == "content_block_start":
            block = ev.get("content_block", {})
            if block.get("type") == "tool_use":
                index = self.tool_index.setdefault(ev.get("index", 0), len(self.tool_index))
                return [self._chunk({"tool_calls": [{
                    "index": index, "id": block.get("id"), "type": "function",
                    "function": {"name": block.get("name"), "arguments": ""}}]})]
            if block.get("text"):
                return [self._chunk({"content": block["text"]})]
            return []
        if kind == "content_block_delta":
            delta = ev.get("delta", {})
            if delta.get("type") == "text_delta":
                return [self._chunk({"content": delta.get("text", "")})]
            if delta.get("type") == "input_json_delta":
                index = self.tool_index.get(ev.get("index", 0), 0)
                return [self._chunk({"tool_calls": [{
                    "index": index, "function": {"arguments": delta.get("partial_json", "")}}]})]
            return []
        if kind == "message_delta":
            self.usage.update(ev.get("usage") or {})
            reason = (ev.get("delta") or {}).get("stop_reason")
            self.finish = _FINISH.get(reason or "", "stop")
            return []
        if kind == "message_stop":
            out = [self._chunk({}, self.finish or "stop")]
            if self.include_usage:
                out.append(sse.encode(orjson.dumps({
                    "id": self.id, "object": "chat.completion.chunk", "created": self.created,
                    "model": self.model, "choices": [], "usage": _usage(self.usage)})))
            out.append(sse.encode(sse.DONE))
            return out
        if kind == "error":
            err = ev.get("error", {})
            return [sse.encode(orjson.dumps({"error": {
                "message": err.get("message", "upstream error"),
                "type": err.get("type", "upstream_error"), "param": None, "code": None}}))]
        return []  # ping, content_block_stop
