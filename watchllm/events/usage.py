"""Token usage of a finished exchange: from the provider's own numbers when it sent them,
counted with the tokenizer (`watchllm.core`) when it did not (streams without
`stream_options.include_usage`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from watchllm import core
from watchllm.events.usage_counts import message_parts, usage_counts


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
    """The provider's usage object read by the streams' rule (`usage_counts`)."""
    if not isinstance(u, dict):
        return None
    return Usage(*usage_counts(u))


def from_usage_doc(u: Any) -> Usage:
    return _from_usage(u) or Usage()


def response_text(endpoint: str, doc: dict[str, Any]) -> str:
    """The generated text of a complete response; parts of the wrong type are skipped,
    as in streams (`stream.rs`): a malformed upstream body never raises here."""
    choices = doc.get("choices")
    if endpoint not in ("chat/completions", "completions") or not isinstance(choices, list):
        return ""
    parts: list[str] = []
    for choice in choices:
        if not isinstance(choice, dict):
            continue
        if endpoint == "completions":
            if isinstance(text := choice.get("text"), str):
                parts.append(text)
            continue
        if isinstance(msg := choice.get("message"), dict):
            message_parts(msg, parts)
    return "".join(parts)


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


def text_tokens(text: str, encoding: str) -> int:
    """Tokens of `text`; where the tokenizer's regex gives up (its backtracking stack, on
    about a million consecutive non-ASCII spaces; tiktoken panics there) an estimate of
    UTF-8 bytes / 4, so such a text is still counted, not failed."""
    try:
        return core.count_tokens(text, encoding)
    except ValueError:
        return -(-len(text.encode("utf-8", "replace")) // 4)


def chat_prompt_tokens(body: bytes | dict[str, Any]) -> int:
    """Prompt tokens of a chat request body, or of the dict parsed from it (the same
    count, without parsing again), by OpenAI's formula (0 if it cannot be read)."""
    try:
        return core.count_chat_tokens(body)
    except (ValueError, RecursionError):  # RecursionError: the twin, on ~500-deep fields
        return 0


def from_stream(raw: bytes, request: dict[str, Any],
                prompt_tokens: int | None = None) -> tuple[Usage, str]:
    """Usage and text of a streamed chat completion (SSE bytes as sent to the client).
    `request`: the body as parsed (counted as is: a third of the cost of parsing it
    again); `prompt_tokens`: its `count_chat_tokens` if the caller already has it."""
    reported, text = core.stream_usage(raw)
    if reported is not None:
        return Usage(*reported), text
    model = str(request.get("model", ""))
    prompt = prompt_tokens if prompt_tokens is not None else chat_prompt_tokens(request)
    return Usage(prompt, text_tokens(text, core.encoding_for_model(model)),
                 counted=True), text
