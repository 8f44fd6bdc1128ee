"""Twin of `stream.rs`: usage and generated text of a finished SSE stream.

The rule (framing, which values count, wrong types as absent) is stated in `stream.rs`;
`tests/core/test_stream.py` proves the two agree.
"""

from __future__ import annotations

from watchllm.events.usage_counts import Counts, usage_counts
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
