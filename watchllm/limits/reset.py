"""OpenAI's `x-ratelimit-reset-*` format."""

from __future__ import annotations


def duration(ms: int) -> str:
    """OpenAI's reset format (Go durations): "20ms", "1s", "8.64s", "6m0s", "1h2m3s"."""
    if ms < 1000:
        return f"{max(ms, 0)}ms"
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    seconds = f"{rest / 1000:.3f}".rstrip("0").rstrip(".") + "s"
    if hours:
        return f"{hours}h{minutes}m{seconds}"
    return f"{minutes}m{seconds}" if minutes else seconds
