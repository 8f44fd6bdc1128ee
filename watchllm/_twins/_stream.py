"""Twin of `stream.rs`: usage and generated text of a finished SSE stream.

The rule (framing, which values count, wrong types as absent) is stated in `stream.rs`;
`tests/core/test_stream.py` proves the two agree.
"""

from __future__ import annotations

from typing import Any

from watchllm.proxy import sse

Usage = tuple[int, int, int]
_MAX = 2**63 - 1


def _count(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return 0
    return min(max(int(v), 0), _MAX)


def _usage_of(u: dict[str, Any]) -> Usage:
    def either(a: str, b: str) -> Any:
        return u[a] if a in u else u.get(b)

    details = u.get("prompt_tokens_details") or u.get("input_tokens_details")
    cached = _count(details.get("cached_tokens")) if isinstance(details, dict) else 0
    return (_count(either("prompt_tokens", "input_tokens")),
            _count(either("completion_tokens", "output_tokens")), cached)


def stream_usage(raw: bytes) -> tuple[Usage | None, str]:
    usage: Usage | None = None
    text: list[str] = []
    for chunk in sse.json_events(raw)[0]:
        if not isinstance(chunk, dict):
            continue
        if isinstance(u := chunk.get("usage"), dict):
            usage = _usage_of(u)
        choices = chunk.get("choices")
        for choice in choices if isinstance(choices, list) else ():
            delta = choice.get("delta") if isinstance(choice, dict) else None
            if not isinstance(delta, dict):
                continue
            if isinstance(content := delta.get("content"), str):
                text.append(content)
            calls = delta.get("tool_calls")
            for call in calls if isinstance(calls, list) else ():
                function = call.get("function") if isinstance(call, dict) else None
                args = function.get("arguments") if isinstance(function, dict) else None
                if isinstance(args, str):
                    text.append(args)
    return usage, "".join(text)
