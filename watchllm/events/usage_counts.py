"""The one rule for reading a provider's usage object and generated text, streamed or not.

`stream.rs` (Rust) states and implements it for streams; its twin and the non-stream path
(`events/usage.py`) use this module, so an upstream's numbers are read the same way
everywhere: `prompt_tokens` (else `input_tokens`), `completion_tokens` (else
`output_tokens`), `prompt_tokens_details.cached_tokens` (else `input_tokens_details`). A
count that is not a number (a string, a bool, null, an object) counts as 0; floats are
truncated; the result is clamped to 0..2**63-1. The text of a message (or a stream's
delta) is its `content` string, then each tool call's `function.arguments` string; parts
of any other type are skipped. Malformed upstream values never raise.
"""

from __future__ import annotations

from typing import Any

Counts = tuple[int, int, int]  # prompt, completion, cached
_MAX = 2**63 - 1


def count(v: Any) -> int:
    """One count from parsed JSON (which holds no NaN or infinity)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return 0
    return min(max(int(v), 0), _MAX)


def usage_counts(u: dict[str, Any]) -> Counts:
    def either(a: str, b: str) -> Any:
        return u[a] if a in u else u.get(b)

    details = u.get("prompt_tokens_details") or u.get("input_tokens_details")
    cached = count(details.get("cached_tokens")) if isinstance(details, dict) else 0
    return (count(either("prompt_tokens", "input_tokens")),
            count(either("completion_tokens", "output_tokens")), cached)


def message_parts(msg: dict[str, Any], parts: list[str]) -> None:
    """Append the generated text of one message or delta to `parts`."""
    if isinstance(content := msg.get("content"), str):
        parts.append(content)
    calls = msg.get("tool_calls")
    for call in calls if isinstance(calls, list) else ():
        function = call.get("function") if isinstance(call, dict) else None
        args = function.get("arguments") if isinstance(function, dict) else None
        if isinstance(args, str):
            parts.append(args)
