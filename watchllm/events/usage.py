"""Token usage of a finished exchange: from the provider's own numbers when it sent them,
counted with the tokenizer (`watchllm.core`) when it did not (streams without
`stream_options.include_usage`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from watchllm import core


@dataclass(slots=True)
class Usage:
    prompt: int = 0
    completion: int = 0
    cached: int = 0
    counted: bool = False  # True when we counted instead of the provider reporting

    def as_openai(self) -> dict[str, Any]:
        return {"prompt_tokens": self.prompt, "completion_tokens": self.completion,
                "total_tokens": self.prompt + self.completion,
                "prompt_tokens_details": {"cached_tokens": self.cached}}


def _from_usage(u: Any) -> Usage | None:
    if not isinstance(u, dict):
        return None
    prompt = u.get("prompt_tokens", u.get("input_tokens", 0)) or 0
    completion = u.get("completion_tokens", u.get("output_tokens", 0)) or 0
    details = u.get("prompt_tokens_details") or u.get("input_tokens_details") or {}
    cached = details.get("cached_tokens", 0) if isinstance(details, dict) else 0
    return Usage(int(prompt), int(completion), int(cached or 0))


def from_usage_doc(u: Any) -> Usage:
    return _from_usage(u) or Usage()


def response_text(endpoint: str, doc: dict[str, Any]) -> str:
    if endpoint == "chat/completions":
        parts = []
        for choice in doc.get("choices") or []:
            msg = choice.get("message") or {}
            parts.append(msg.get("content") or "")
            parts += [(c.get("function") or {}).get("arguments", "")
                      for c in msg.get("tool_calls") or []]
        return "".join(parts)
    if endpoint == "completions":
        return "".join(c.get("text", "") for c in doc.get("choices") or [])
    return ""


def from_body(endpoint: str, body: bytes) -> tuple[Usage, str, dict[str, Any] | None]:
    """Usage, the generated text, and the raw usage object of a complete JSON response."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return Usage(), "", None
    if not isinstance(doc, dict):
        return Usage(), "", None
    raw = doc.get("usage")
    return _from_usage(raw) or Usage(), response_text(endpoint, doc), \
        raw if isinstance(raw, dict) else None


def from_stream(raw: bytes, request: dict[str, Any], request_body: bytes) -> tuple[Usage, str]:
    """Usage and text of a streamed chat completion (SSE bytes as sent to the client)."""
    reported, text = core.stream_usage(raw)
    if reported is not None:
        return Usage(*reported), text
    model = str(request.get("model", ""))
    try:
        prompt = core.count_chat_tokens(request_body)
    except ValueError:
        prompt = 0
    return Usage(prompt, core.count_tokens(text, core.encoding_for_model(model)),
                 counted=True), text
