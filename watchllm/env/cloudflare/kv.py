"""KeyValue on Workers KV (the exact response cache).

KV's rules and what this adapter does about them:
- `expirationTtl` must be >= 60 s. The adapter asks KV for max(ttl, 60) and also stores
  the exact expiry in a 9-byte header before the value; `get` treats an entry past it as
  absent. So TTLs below a minute are exact on read, and KV still collects the garbage.
- Values are at most 25 MiB: larger ones raise `ValueTooLarge` (a ValueError) before any
  request is made. Keys are at most 512 bytes: longer keys keep a prefix and end in a
  hash (prefix deletes still work for prefixes shorter than 400 bytes).
- KV is eventually consistent (other locations may read a value up to ~60 s old) and
  allows about one write per second per key, so it cannot be a cross-isolate lock.
  `add()` (the cache's single-flight lock) is therefore atomic only within one isolate:
  concurrent identical requests in the same isolate go upstream once; requests that land
  on different isolates or locations may each go upstream (duplicate upstream calls, never
  a wrong answer), and no request ever waits on a lock it cannot see released. The lock
  itself is never written to KV, which also spares the per-key write budget.
"""

from __future__ import annotations

import hashlib
import math
import struct
import time
from typing import Any

from watchllm.env.cloudflare._js import as_bytes, is_null, js_value, to_py, unwrap

MIN_TTL_S = 60
MAX_VALUE_BYTES = 25 * 1024 * 1024
MAX_KEY_BYTES = 512
_HEADER = struct.Struct(">BQ")  # version 1, expiry in epoch ms (0 = never)
_VERSION = 1


class ValueTooLarge(ValueError):
    """The value exceeds Workers KV's 25 MiB limit."""


def kv_key(key: str) -> str:
    raw = key.encode()
    if len(raw) <= MAX_KEY_BYTES:
        return key
    digest = hashlib.sha256(raw).hexdigest()
    return raw[:400].decode(errors="ignore") + "#" + digest


def kv_ttl(ttl_s: float | None) -> int | None:
    """What KV is asked for: whole seconds, at least KV's minimum of 60."""
    return None if not ttl_s else max(MIN_TTL_S, math.ceil(ttl_s))


class WorkersKeyValue:
    def __init__(self, binding: Any) -> None:
        self._kv = unwrap(binding)
        # Isolate-local locks from add(): key -> (value, expiry on time.monotonic()).
        self._locks: dict[str, tuple[bytes, float]] = {}

    def _lock(self, key: str) -> bytes | None:
        item = self._locks.get(key)
        if item is None:
            return None
        if item[1] <= time.monotonic():
            del self._locks[key]
            return None
        return item[0]

    async def get(self, key: str) -> bytes | None:
        local = self._lock(key)
        if local is not None:
            return local
        data = await self._kv.get(kv_key(key), js_value({"type": "arrayBuffer"}))
        if is_null(data):
            return None
        raw = as_bytes(data)
        if len(raw) < _HEADER.size or raw[0] != _VERSION:
            return None  # not written by this adapter
        _, expires_ms = _HEADER.unpack_from(raw)
        if expires_ms and expires_ms <= time.time() * 1000:
            return None
        return raw[_HEADER.size:]

    async def set(self, key: str, value: bytes, ttl_s: float | None = None) -> None:
        size = len(value) + _HEADER.size
        if size > MAX_VALUE_BYTES:
            raise ValueTooLarge(f"KV values are limited to 25 MiB; this one is {size} bytes")
        expires_ms = int(time.time() * 1000 + ttl_s * 1000) if ttl_s else 0
        options: dict[str, Any] = {}
        ttl = kv_ttl(ttl_s)
        if ttl is not None:
            options["expirationTtl"] = ttl
        self._locks.pop(key, None)
        await self._kv.put(kv_key(key), js_value(_HEADER.pack(_VERSION, expires_ms) + value),
                           js_value(options))

    async def add(self, key: str, value: bytes, ttl_s: float) -> bool:
        if self._lock(key) is not None:
            return False
        # Claimed before the first await: the check and the claim are one step in this
        # isolate's event loop.
        self._locks[key] = (value, time.monotonic() + ttl_s)
        try:
            present = await self._kv.get(kv_key(key), js_value({"type": "arrayBuffer"}))
        except BaseException:
            self._locks.pop(key, None)
            raise
        if not is_null(present) and _live(present):
            self._locks.pop(key, None)
            return False
        return True

    async def delete(self, key: str) -> bool:
        if self._locks.pop(key, None) is not None:
            return True  # a lock from add(): never written to KV
        name = kv_key(key)
        present = await self._kv.get(name, js_value({"type": "arrayBuffer"}))
        if is_null(present) or not _live(present):
            return False
        await self._kv.delete(name)
        return True

    async def delete_prefix(self, prefix: str) -> int:
        count = 0
        for k in [k for k in self._locks if k.startswith(prefix)]:
            del self._locks[k]
            count += 1
        cursor: str | None = None
        while True:
            options: dict[str, Any] = {"prefix": prefix}
            if cursor:
                options["cursor"] = cursor
            page = to_py(await self._kv.list(js_value(options)))
            for item in page.get("keys") or []:
                await self._kv.delete(item["name"])
                count += 1
            cursor = page.get("cursor")
            if page.get("list_complete", True) or not cursor:
                return count

    async def close(self) -> None:
        self._locks.clear()


def _live(data: Any) -> bool:
    raw = as_bytes(data)
    if len(raw) < _HEADER.size or raw[0] != _VERSION:
        return True  # someone else's value: present
    _, expires_ms = _HEADER.unpack_from(raw)
    return not expires_ms or expires_ms > time.time() * 1000
