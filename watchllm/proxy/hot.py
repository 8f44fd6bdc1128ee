"""Repeat requests answered from the cache without being read again.

After an exact cache HIT, the request is remembered by (key id, endpoint, raw body). The next
byte-identical request from the same key skips JSON parsing, validation, routing, the
cache-key hash and rendering the response: it replays the prebuilt body with fresh
per-request headers and event fields.

Nothing is served that the full path would not serve. On every use the memo re-checks, by
identity, each cached input the full path read: the caller's Principal, the project's
settings, its provider keys and its limits (each per-worker cache hands out the same object
until its TTL runs out or an admin change on this worker drops it, so a change is seen
exactly when the full path would see it); and the cache entry by its stored bytes, so a
purge, an expiry or a rewrite is a miss. Requests with cache-control headers or body
controls never use the memo; limits still admit every request.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from watchllm.auth import Principal
from watchllm.events.usage import Usage
from watchllm.http.asgi import TextHeaders

MAX_ENTRIES = 4096
MAX_BYTES = 32 << 20  # request + response bytes remembered per worker
MAX_REQUEST_BYTES = 64 << 10  # larger bodies are rarely repeated verbatim

MemoKey = tuple[str, str, bytes]  # (key id, endpoint, raw body)


@dataclass(slots=True)
class HotRequest:
    # what the full path read, compared by identity on each use
    principal: Principal
    project_settings: dict[str, Any]
    own_keys: dict[str, str]
    limits: Any  # watchllm.limits.plan.Limits | None
    kv_key: str
    stored: bytes  # the KV value the answer came from
    # what the full path worked out from the request
    model: str
    stream: bool
    provider: str
    prompt: str
    user: str
    estimate: int  # prompt tokens, for token limits
    # the answer
    body: bytes
    headers: TextHeaders  # the per-request-independent response headers
    created: float  # the entry's creation time (Age)
    usage: Usage
    cost_saved_usd: float
    event: dict[str, Any]  # the event, minus per-request fields

    @property
    def size(self) -> int:
        return len(self.body) + len(self.stored) + len(self.prompt.encode()) + 512


class HotRequests:
    """A bounded memo (oldest out first) of requests answered from the cache."""

    def __init__(self, max_entries: int = MAX_ENTRIES, max_bytes: int = MAX_BYTES) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.bytes = 0
        self._memo: dict[MemoKey, HotRequest] = {}

    def get(self, key: MemoKey) -> HotRequest | None:
        return self._memo.get(key)

    def put(self, key: MemoKey, hot: HotRequest) -> None:
        if len(key[2]) > MAX_REQUEST_BYTES or hot.size + len(key[2]) > self.max_bytes // 16:
            return
        self.drop(key)
        while self._memo and (len(self._memo) >= self.max_entries
                              or self.bytes + hot.size + len(key[2]) > self.max_bytes):
            self.drop(next(iter(self._memo)))
        self._memo[key] = hot
        self.bytes += hot.size + len(key[2])

    def drop(self, key: MemoKey) -> None:
        hot = self._memo.pop(key, None)
        if hot is not None:
            self.bytes -= hot.size + len(key[2])

    def clear(self) -> None:
        self._memo.clear()
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._memo)
