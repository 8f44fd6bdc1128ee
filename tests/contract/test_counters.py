"""Counters contract: in-process and Redis (Lua) counters add up exactly and expire."""

from __future__ import annotations

import asyncio
from typing import Any

from watchllm.limits.ops import QUOTA, Op


async def test_incr_returns_running_total(counters: Any) -> None:
    assert await counters.get("c") == 0.0
    assert await counters.incr("c", 2, 60) == 2.0
    assert await counters.incr("c", 0.5, 60) == 2.5
    assert await counters.incr("c", -1, 60) == 1.5
    assert await counters.get("c") == 1.5


async def test_concurrent_increments_are_not_lost(counters: Any) -> None:
    await asyncio.gather(*(counters.incr("hits", 1, 60) for _ in range(200)))
    assert await counters.get("hits") == 200.0


async def test_ttl_starts_at_first_increment_and_is_not_extended(counters: Any) -> None:
    await counters.incr("w", 1, 0.15)
    await asyncio.sleep(0.08)
    await counters.incr("w", 1, 0.15)  # does not push the expiry back
    assert await counters.get("w") == 2.0
    await asyncio.sleep(0.12)
    assert await counters.get("w") == 0.0
    assert await counters.incr("w", 1, 60) == 1.0


async def test_apply_quota_batch(counters: Any) -> None:
    end = 2**41  # a period end far in the future (epoch ms)
    ops = [Op(QUOTA, "q", 3, end)]
    allowed = [(await counters.apply(ops)).allowed for _ in range(5)]
    assert allowed == [True, True, True, False, False]
