"""The one rule for reading a provider's usage object, streamed or not.

`stream.rs` (Rust) states and implements it for streams; its twin and the non-stream path
(`events/usage.py`) use this module, so an upstream's numbers are read the same way
everywhere: `prompt_tokens` (else `input_tokens`), `completion_tokens` (else
`output_tokens`), `prompt_tokens_details.cached_tokens` (else `input_tokens_details`). A
count that is not a number (a string, a bool, null, an object) counts as 0; floats are
truncated; the result is clamped to 0..2**63-1. Malformed upstream values never raise.
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
