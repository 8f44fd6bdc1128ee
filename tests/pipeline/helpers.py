"""Events and sink wrappers shared by the pipeline tests and benchmarks."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

START_MS = int(time.time() * 1000)


def make_event(i: int, run: str = "r", **extra: Any) -> dict[str, Any]:
    """A prompt_call like the gateway emits (ProxyContext.event())."""
    return {
        "event_id": f"{run}-{i:08d}",
        "event_type": "prompt_call",
        "project_id": f"proj_{i % 3}",
        "timestamp": START_MS + i,
        "user_id": "user-1",
        "tags": ["bench", "t"],
        "client_hostname": "host",
        "client_sdk_version": "gateway",
        "client_platform": "watchllm-gateway",
        "endpoint": "chat/completions",
        "prompt": "Summarise the following text in one sentence: " + "lorem ipsum " * 8,
        "response": "A short summary of the text. " * 3,
        "model": ("gpt-4o-mini", "claude-3-5-haiku")[i % 2],
        "provider": ("openai", "anthropic")[i % 2],
        "tokens_input": 40 + i % 7,
        "tokens_output": 20 + i % 5,
        "tokens_cached": 0,
        "cost_estimate_usd": 0.00012,
        "cost_saved_usd": 0.0,
        "latency_ms": 100.0 + i % 50,
        "time_to_first_token_ms": None,
        "status": "success",
        "http_status": 200,
        "cache_status": ("MISS", "HIT")[i % 2],
        "request_id": f"req-{run}-{i}",
        "key_id": "key1",
        "error_type": "",
        "error_message": "",
        "metadata": {"team": "a"},
        **extra,
    }


class FlakySink:
    """Wraps an Analytics; while `down` is set every insert raises ConnectionError, and
    events whose event_id is in `poison` make the insert raise ValueError (rejected)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.down = False
        self.poison: set[str] = set()
        self.attempts = 0
        self.failures = 0
        self.tokens: list[str | None] = []

    async def insert_rowbinary(self, table: str, columns: Sequence[str], data: bytes,
                               dedup_token: str | None = None) -> None:
        self.attempts += 1
        self.tokens.append(dedup_token)
        if self.down:
            self.failures += 1
            raise ConnectionError("sink is down (test)")
        for bad in self.poison:
            if bad.encode() in data:
                self.failures += 1
                raise ValueError(f"rejected {bad} (test)")
        await self.inner.insert_rowbinary(table, columns, data, dedup_token)

    async def query(self, sql: str, params: Mapping[str, Any] | None = None) -> list[Any]:
        result: list[Any] = await self.inner.query(sql, params)
        return result

    async def close(self) -> None:
        return None


async def stored(analytics: Any, table: str = "events") -> tuple[int, int]:
    """(rows, distinct event ids) in `table` after collapsing duplicates."""
    rows = await analytics.query(
        f"SELECT count() AS n, uniqExact(event_id) AS u FROM {table} FINAL"
    )
    return int(rows[0]["n"]), int(rows[0]["u"])
