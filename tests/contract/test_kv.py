"""KeyValue contract: the in-process LRU and Redis."""

from __future__ import annotations

import asyncio
from typing import Any


async def test_get_set_delete(kv: Any) -> None:
    assert await kv.get("a") is None
    await kv.set("a", b"1")
    await kv.set("b", b"\x00\xff" * 1000)
    assert await kv.get("a") == b"1"
    assert await kv.get("b") == b"\x00\xff" * 1000
    await kv.set("a", b"2")
    assert await kv.get("a") == b"2"
    assert await kv.delete("a") is True
    assert await kv.delete("a") is False
    assert await kv.get("a") is None


async def test_ttl_expires(kv: Any) -> None:
    await kv.set("short", b"x", ttl_s=0.05)
    await kv.set("long", b"y", ttl_s=60)
    assert await kv.get("short") == b"x"
    await asyncio.sleep(0.12)
    assert await kv.get("short") is None
    assert await kv.get("long") == b"y"


async def test_add_only_when_absent(kv: Any) -> None:
    results = await asyncio.gather(*(kv.add("lock", str(i).encode(), 60) for i in range(20)))
    assert results.count(True) == 1
    assert await kv.add("lock", b"again", 60) is False
    await kv.delete("lock")
    assert await kv.add("lock", b"again", 0.05) is True
    await asyncio.sleep(0.12)
    assert await kv.add("lock", b"after expiry", 60) is True


async def test_delete_prefix_takes_glob_characters_literally(kv: Any) -> None:
    for k in ("ns1:a", "ns1:b", "ns10:a", "ns*:a", "other"):
        await kv.set(k, b"v")
    assert await kv.delete_prefix("ns1:") == 2
    assert await kv.get("ns10:a") == b"v"
    assert await kv.delete_prefix("ns*") == 1
    assert await kv.get("ns10:a") == b"v" and await kv.get("other") == b"v"
