"""What one proxied request did, gathered as it runs and emitted as one prompt_call event."""

from __future__ import annotations

import os
import time
from typing import Any

from watchllm.events.usage import Usage
from watchllm.http.asgi import TextHeaders
from watchllm.limits.service import Admitted

MAX_LOGGED_BODY = 1 << 20  # prompt/response text kept per event; longer is cut and marked
_HOST = os.uname().nodename if hasattr(os, "uname") else ""


def _cut(text: str) -> str:
    if len(text) <= MAX_LOGGED_BODY:
        return text
    return text[:MAX_LOGGED_BODY] + f"...[truncated {len(text) - MAX_LOGGED_BODY} chars]"


def ms3(ms: float) -> float:
    """A non-negative duration in ms, rounded half up to the microsecond: round(ms, 3)
    but where ms * 1000 lands within a rounding error of a half, at less than half the
    cost (round() formats and parses a decimal)."""
    return int(ms * 1000 + 0.5) / 1000


def replayed_event(template: dict[str, Any], request_id: str, wall_ms: int,
                   latency_ms: float, ttft_ms: float | None) -> dict[str, Any]:
    """The event of a request answered by replaying a remembered hit: its template
    (proxy/hot.py) with this request's own fields."""
    event = template.copy()
    event["event_id"] = event["request_id"] = request_id
    event["timestamp"] = wall_ms
    event["latency_ms"] = ms3(latency_ms)
    event["time_to_first_token_ms"] = None if ttft_ms is None else ms3(ttft_ms)
    return event


class ProxyContext:
    """One per request: made with its id and endpoint, every other field at its start
    value (a hand-written __init__: a dataclass's, with its default factories, ran twice
    the bytecodes on every request)."""

    __slots__ = ("admission", "cache_status", "cost_saved_usd", "cost_usd", "counted",
                 "endpoint", "error_message", "error_type", "key_id", "limit_headers",
                 "model", "project_id", "prompt", "provider", "request_id", "response",
                 "settle", "started", "status", "stream", "template", "ttft_s", "upstream_s",
                 "usage", "user", "wall_ms")

    def __init__(self, request_id: str, endpoint: str) -> None:
        self.request_id = request_id
        self.endpoint = endpoint
        self.started = time.perf_counter()
        self.wall_ms = int(time.time() * 1000)
        self.project_id = self.key_id = self.model = self.provider = ""
        self.stream = False
        self.status = 0
        self.ttft_s: float | None = None
        self.upstream_s: float | None = None  # waiting for the provider's status and headers
        self.usage = Usage()
        self.cache_status = "NONE"
        self.cost_usd = self.cost_saved_usd = 0.0
        self.error_type = self.error_message = self.prompt = self.response = self.user = ""
        self.admission: Admitted | None = None
        self.limit_headers: TextHeaders = []
        self.settle: Any = None  # `Limits.settle_at_once` when admitted by `admit_at_once`
        # (body, its count_chat_tokens) from admission
        self.counted: tuple[bytes, int] | None = None
        # A replayed request's event, minus the per-request fields (see proxy/hot.py).
        self.template: dict[str, Any] | None = None

    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000

    def event(self) -> dict[str, Any]:
        """The request's event. Every value is a str, number, bool or None, so CPython
        never tracks the dict for the cyclic collector: events queued for a batch cost
        the collector nothing (a list here, e.g. empty `tags`, made every queued event
        part of each collection: 20k of them, pauses of 6-20 ms, in the p99 of hits).
        `tags` and `metadata` are left out; the encoder writes them empty."""
        if self.template is not None and self.status == 200:
            return replayed_event(self.template, self.request_id, self.wall_ms,
                                  self.elapsed_ms(), None if self.ttft_s is None
                                  else self.ttft_s * 1000)
        ok = 200 <= self.status < 400
        return {
            "event_id": self.request_id,
            "event_type": "prompt_call" if ok or not self.error_type else "error",
            "project_id": self.project_id,
            "timestamp": self.wall_ms,
            "user_id": self.user,
            "client_hostname": _HOST,
            "client_sdk_version": "gateway",
            "client_platform": "watchllm-gateway",
            "endpoint": self.endpoint,
            "prompt": _cut(self.prompt),
            "response": _cut(self.response),
            "model": self.model,
            "provider": self.provider,
            "tokens_input": self.usage.prompt,
            "tokens_output": self.usage.completion,
            "tokens_cached": self.usage.cached,
            "cost_estimate_usd": self.cost_usd,
            "cost_saved_usd": self.cost_saved_usd,
            "latency_ms": ms3(self.elapsed_ms()),
            "time_to_first_token_ms": None if self.ttft_s is None else ms3(self.ttft_s * 1000),
            "status": "success" if ok else ("cancelled" if self.status == 499 else "error"),
            "http_status": self.status,
            "cache_status": self.cache_status,
            "request_id": self.request_id,
            "key_id": self.key_id,
            "error_type": self.error_type,
            "error_message": self.error_message[:2000],
        }
