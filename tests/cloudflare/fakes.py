"""CPython stand-ins for the Workers bindings that enforce Cloudflare's documented limits.

They answer like the JS bindings do under Pyodide: results are JS-like objects that must be
converted with `to_py()` (a dict-shaped result used directly fails), binary values come back
as ArrayBuffer-likes with `to_bytes()`, and a call Cloudflare would refuse raises
`JsException` with Cloudflare's kind of message. The Pyodide tier (test_worker.py) runs the
same adapters against Miniflare's real D1, KV and Queues; Vectorize has no local emulator,
so `FakeVectorize` is its only test double.
"""

from __future__ import annotations

import asyncio
import copy
import json
import math
import sqlite3
import time
from typing import Any

from watchllm.env.cloudflare._js import JsException
from watchllm.env.cloudflare.limiter import LimiterState


class JsObject:
    """A JS object seen from Python: attribute access, no dict protocol, `to_py()`."""

    def __init__(self, data: dict[str, Any]) -> None:
        self._data = data

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["_data"][name]
        except KeyError:
            return None  # undefined

    def to_py(self) -> dict[str, Any]:
        return copy.deepcopy(self._data)


class ArrayBuffer:
    def __init__(self, data: bytes) -> None:
        self._data = data

    def to_bytes(self) -> bytes:
        return self._data


def _binary(value: Any) -> bytes:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str):
        return value.encode()
    raise JsException(f"KV put() accepts only strings, ArrayBuffers, ArrayBufferViews, and "
                      f"ReadableStreams as values; got {type(value).__name__}")


# -- D1 --------------------------------------------------------------------------------
class FakeStatement:
    def __init__(self, db: FakeD1, sql: str, params: tuple[Any, ...] = ()) -> None:
        self.db, self.sql, self.params = db, sql, params

    def bind(self, *params: Any) -> FakeStatement:
        for p in params:
            if (p is not None and not isinstance(p, (int, float, str, bytes))) \
                    or isinstance(p, bool):
                raise JsException(f"D1_TYPE_ERROR: Type '{type(p).__name__}' not supported "
                                  "for value")
        return FakeStatement(self.db, self.sql, params)

    def _exec(self) -> dict[str, Any]:
        try:
            cur = self.db.conn.execute(self.sql, self.params)
            rows = cur.fetchall()
        except sqlite3.Error as exc:
            raise JsException(f"D1_ERROR: {exc}: SQLITE_ERROR") from None
        cols = [d[0] for d in cur.description or ()]
        return {"success": True, "results": [dict(zip(cols, r, strict=True)) for r in rows],
                "meta": {"changes": cur.rowcount if cur.rowcount > 0 else 0,
                         "last_row_id": cur.lastrowid}}

    async def run(self) -> JsObject:
        await asyncio.sleep(0)
        return JsObject(self._exec())

    async def all(self) -> JsObject:
        return await self.run()


class FakeD1:
    """D1 is SQLite: the fake runs real SQLite, one statement or one batch at a time."""

    def __init__(self) -> None:
        self.conn = sqlite3.connect(":memory:", isolation_level=None)

    def prepare(self, sql: str) -> FakeStatement:
        return FakeStatement(self, sql)

    async def batch(self, statements: list[FakeStatement]) -> list[JsObject]:
        await asyncio.sleep(0)
        self.conn.execute("BEGIN")
        try:
            out = [JsObject(s._exec()) for s in statements]
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")
        return out


# -- KV --------------------------------------------------------------------------------
class FakeKV:
    MAX_KEY = 512
    MAX_VALUE = 25 * 1024 * 1024

    def __init__(self, page_size: int = 1000) -> None:
        self.data: dict[str, tuple[bytes, float]] = {}
        self.page_size = page_size
        self.writes = 0

    def _check_key(self, key: str) -> None:
        if key in ("", ".", "..") or len(key.encode()) > self.MAX_KEY:
            raise JsException(f"KV GET failed: 414 UTF-8 encoded length of {len(key.encode())}"
                              f" exceeds key length limit of {self.MAX_KEY}.")

    async def get(self, key: str, options: dict[str, Any] | None = None) -> Any:
        await asyncio.sleep(0)
        self._check_key(key)
        item = self.data.get(key)
        if item is None or (item[1] and item[1] <= time.time()):
            return None
        if (options or {}).get("type") == "arrayBuffer":
            return ArrayBuffer(item[0])
        return item[0].decode()

    async def put(self, key: str, value: Any, options: dict[str, Any] | None = None) -> None:
        await asyncio.sleep(0)
        self._check_key(key)
        data = _binary(value)
        if len(data) > self.MAX_VALUE:
            raise JsException("KV PUT failed: 413 Value length of "
                              f"{len(data)} exceeds limit of {self.MAX_VALUE}.")
        opts = options or {}
        expires = 0.0
        if "expirationTtl" in opts:
            ttl = opts["expirationTtl"]
            if not isinstance(ttl, int) or ttl < 60:
                raise JsException(f"KV PUT failed: 400 Invalid expiration_ttl of {ttl}. "
                                  "Expiration TTL must be at least 60.")
            expires = time.time() + ttl
        self.data[key] = (data, expires)
        self.writes += 1

    async def delete(self, key: str) -> None:
        await asyncio.sleep(0)
        self._check_key(key)
        self.data.pop(key, None)

    async def list(self, options: dict[str, Any] | None = None) -> JsObject:
        await asyncio.sleep(0)
        opts = options or {}
        prefix = opts.get("prefix") or ""
        names = sorted(k for k, v in self.data.items()
                       if k.startswith(prefix) and not (v[1] and v[1] <= time.time()))
        start = int(opts.get("cursor") or 0)
        page = names[start:start + self.page_size]
        done = start + len(page) >= len(names)
        return JsObject({"keys": [{"name": n} for n in page], "list_complete": done,
                         "cursor": "" if done else str(start + len(page))})


# -- Queues ----------------------------------------------------------------------------
class FakeQueue:
    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    async def send(self, body: Any, options: dict[str, Any] | None = None) -> None:
        await self.sendBatch([{"body": body, **(options or {})}])

    async def sendBatch(self, messages: list[dict[str, Any]]) -> None:
        await asyncio.sleep(0)
        if len(messages) > 100:
            raise JsException("Queue sendBatch failed: batch may contain at most 100 messages")
        total = 0
        for m in messages:
            body = m["body"]
            size = len(body.encode()) if isinstance(body, str) else len(json.dumps(body))
            if size > 128_000:
                raise JsException("Queue send failed: message too large (128 KB limit)")
            total += size
        if total > 256_000:
            raise JsException("Queue sendBatch failed: batch larger than 256 KB")
        self.messages.extend(copy.deepcopy(messages))

    def take_batch(self) -> FakeBatch:
        batch = FakeBatch([FakeMessage(str(i), m["body"]) for i, m in enumerate(self.messages)])
        self.messages = []
        return batch


class FakeMessage:
    def __init__(self, id: str, body: Any, attempts: int = 1) -> None:
        self.id, self.body, self.attempts = id, body, attempts
        self.outcome: str | None = None
        self.delay: int | None = None

    def ack(self) -> None:
        self.outcome = "ack"

    def retry(self, options: dict[str, Any] | None = None) -> None:
        self.outcome = "retry"
        self.delay = (options or {}).get("delaySeconds")


class FakeBatch:
    def __init__(self, messages: list[FakeMessage], queue: str = "watchllm-events") -> None:
        self.messages, self.queue = messages, queue


# -- Vectorize -------------------------------------------------------------------------
class FakeVectorize:
    def __init__(self, dimensions: int) -> None:
        if dimensions > 1536:
            raise ValueError("Vectorize indexes have at most 1536 dimensions")
        self.dimensions = dimensions
        self.vectors: dict[str, dict[str, Any]] = {}
        self.upsert_calls: list[int] = []

    async def upsert(self, vectors: list[dict[str, Any]]) -> JsObject:
        await asyncio.sleep(0)
        if len(vectors) > 1000:
            raise JsException("VECTOR_UPSERT_ERROR (code = 40007): too many vectors (max 1000)")
        for v in vectors:
            if len(v["values"]) != self.dimensions:
                raise JsException(f"VECTOR_UPSERT_ERROR (code = 40012): vector has "
                                  f"{len(v['values'])} dimensions, index has {self.dimensions}")
            if len(v["id"].encode()) > 64 or len(v.get("namespace", "").encode()) > 64:
                raise JsException("VECTOR_UPSERT_ERROR: id or namespace longer than 64 bytes")
            if len(json.dumps(v.get("metadata") or {}).encode()) > 10 * 1024:
                raise JsException("VECTOR_UPSERT_ERROR: metadata larger than 10 KiB")
        self.upsert_calls.append(len(vectors))
        for v in vectors:
            self.vectors[v["id"]] = copy.deepcopy(v)
        return JsObject({"mutationId": str(len(self.upsert_calls))})

    async def query(self, vector: list[float], options: dict[str, Any]) -> JsObject:
        await asyncio.sleep(0)
        top_k = options.get("topK", 5)
        heavy = options.get("returnValues") or options.get("returnMetadata") == "all"
        if top_k > (20 if heavy else 100):
            raise JsException("VECTOR_QUERY_ERROR (code = 40025): topK too large")
        if len(vector) != self.dimensions:
            raise JsException("VECTOR_QUERY_ERROR: query dimensions do not match the index")
        ns = options.get("namespace")
        scored = [(vid, _cosine(vector, v["values"])) for vid, v in self.vectors.items()
                  if ns is None or v.get("namespace") == ns]
        scored.sort(key=lambda s: -s[1])
        return JsObject({"count": min(top_k, len(scored)),
                         "matches": [{"id": i, "score": s} for i, s in scored[:top_k]]})

    async def getByIds(self, ids: list[str]) -> list[JsObject]:
        await asyncio.sleep(0)
        return [JsObject(copy.deepcopy(self.vectors[i])) for i in ids if i in self.vectors]

    async def deleteByIds(self, ids: list[str]) -> JsObject:
        await asyncio.sleep(0)
        for i in ids:
            self.vectors.pop(i, None)
        return JsObject({"mutationId": "d"})


def _cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    na, nb = math.sqrt(sum(x * x for x in a)), math.sqrt(sum(y * y for y in b))
    return dot / (na * nb) if na and nb else 0.0


# -- Durable Objects -------------------------------------------------------------------
class FakeResponse:
    def __init__(self, status: int, text: str) -> None:
        self.status, self._text = status, text

    async def text(self) -> str:
        return self._text


class FakeLimiterObject:
    """One Durable Object: requests one at a time (input gates), state in durable storage."""

    def __init__(self) -> None:
        self.storage: dict[str, str] = {}
        self.state: LimiterState | None = None
        self.lock = asyncio.Lock()

    async def fetch(self, url: str, init: dict[str, Any]) -> FakeResponse:
        async with self.lock:
            await asyncio.sleep(0)  # a real round trip
            if self.state is None:  # first request after (re)start: load from storage
                self.state = LimiterState()
                self.state.load(self.storage.get("state"))
            try:
                result = await self.state.handle(json.loads(init["body"]))
            except (ValueError, KeyError, TypeError) as exc:
                return FakeResponse(400, str(exc))
            self.storage["state"] = self.state.dump()
            return FakeResponse(200, json.dumps(result))

    def evict(self) -> None:
        self.state = None  # memory gone; storage stays


class FakeDurableObjectNamespace:
    def __init__(self) -> None:
        self.objects: dict[str, FakeLimiterObject] = {}

    def idFromName(self, name: str) -> str:
        return f"id:{name}"

    def get(self, id: str) -> FakeLimiterObject:
        return self.objects.setdefault(id, FakeLimiterObject())
