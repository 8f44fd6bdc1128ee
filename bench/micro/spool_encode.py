"""The event writer's encoding, per event: one encoder call per event (JSON lines) against
one call for the whole record (a JSON array), each with the spool's record header.

    .venv/bin/python bench/micro/spool_encode.py [--events 125]

`--events` is the record size: at 25,000 hits/s the writer's 5 ms linger gathers ~125.
The events are distinct dicts of a cache hit's shape (~1.1 KB of JSON each) and every
encoded record stays alive until the next round, as the writer's in-memory records do.
Prints the best of 7 rounds, µs per event.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from watchllm.events.batches import dumps
from watchllm.events.spool import encode_array_record, encode_record

RESPONSE = ('{"id":"chatcmpl-mock","object":"chat.completion","created":1700000000,"model":'
            '"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":'
            '"Hello! This is a mock answer to your question."},"finish_reason":"stop"}],'
            '"usage":{"prompt_tokens":9,"completion_tokens":12,"total_tokens":21}}')


def event(i: int) -> dict[str, object]:
    rid = f"req_{i:032x}"
    return {
        "event_id": rid, "event_type": "prompt_call", "project_id": "proj_0123456789",
        "timestamp": 1764000000000 + i, "user_id": "", "client_hostname": "host",
        "client_sdk_version": "gateway", "client_platform": "watchllm-gateway",
        "endpoint": "chat/completions",
        "prompt": '{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": '
                  '"Say hello"}]}',
        "response": RESPONSE, "model": "gpt-4o-mini", "provider": "openai",
        "tokens_input": 9, "tokens_output": 12, "tokens_cached": 0,
        "cost_estimate_usd": 0.0, "cost_saved_usd": 1.23e-05, "latency_ms": 0.123,
        "time_to_first_token_ms": 0.101, "status": "success", "http_status": 200,
        "cache_status": "HIT", "request_id": rid, "key_id": "key_0123", "error_type": "",
        "error_message": ""}


def per_event_calls(items: list[dict[str, object]]) -> bytes:
    return encode_record([dumps(item) for item in items])


def one_call(items: list[dict[str, object]]) -> bytes:
    return encode_array_record(dumps(items), len(items))


def best_us(fn: Callable[[list[dict[str, object]]], bytes], items: list[dict[str, object]],
            rounds: int = 7) -> float:
    best = float("inf")
    for _ in range(rounds):
        t = time.perf_counter()
        kept = [fn(items) for _ in range(200)]  # alive together, as the writer's are
        best = min(best, (time.perf_counter() - t) / len(kept) / len(items) * 1e6)
    return best


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--events", type=int, default=125)
    n = p.parse_args().events
    items = [event(i) for i in range(n)]
    print(f"record of {n} events, µs per event (best of 7):")
    for fn in (per_event_calls, one_call):
        print(f"  {fn.__name__:16} {best_us(fn, items):6.2f}")


if __name__ == "__main__":
    main()
