"""Twin of `stream.rs`: usage and generated text of a finished SSE stream.

The rule (framing, which values count, wrong types as absent) is stated in `stream.rs`;
`tests/core/test_stream.py` proves the two agree.
"""

from __future__ import annotations

from watchllm.events.usage_counts import Counts, message_parts, usage_counts
from watchllm.proxy import sse

Usage = Counts


def stream_usage(raw: bytes) -> tuple[Usage | None, str]:
    usage: Usage | None = None
    text: list[str] = []
    for chunk in sse.json_events(raw)[0]:
        if not isinstance(chunk, dict):
            continue
        if isinstance(u := chunk.get("usage"), dict):
            usage = usage_counts(u)
        choices = chunk.get("choices")
        for choice in choices if isinstance(choices, list) else ():
            delta = choice.get("delta") if isinstance(choice, dict) else None
            if isinstance(delta, dict):
                message_parts(delta, text)
    return usage, "".join(text)
