"""The in-process limits work of one proxied request, call by call, in a warm loop.

    .venv/bin/python bench/limits/fastpath.py [N]

The calls `routes/proxy.py` makes for a rates-only caller (rpm + tpm) admitted in
process: `limits_now`, the prompt-token estimate, `admit_now`, `headers`, `settle_now`.
Printed: µs per request for the whole sequence, then for each call alone (best of 3).
A served worker pays 2-4x these: its caches are colder (docs/limits.md, "Session 8").
"""

from __future__ import annotations

import asyncio
import sys
import time
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import orjson

from watchllm import core
from watchllm.env.embedded.memory import MemoryCounters
from watchllm.events import usage as usage_mod
from watchllm.limits import LimitsService
from watchllm.settings import Settings

DATA = orjson.loads(b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hi"}]}')


async def main(n: int) -> None:
    svc = LimitsService(MemoryCounters(), Settings(default_rpm=10**8, default_tpm=10**9))
    await svc.admit("p", "k", 5, await svc.limits_for("p", "k"))  # builds the template
    limits = svc.limits_now("p", "k")
    assert limits is not None

    def request() -> None:
        estimate = usage_mod.chat_prompt_tokens(DATA)
        admission = svc.admit_now("p", "k", estimate, limits)
        assert admission is not None
        svc.headers(admission)
        svc.settle_now(admission, 30)

    adm = svc.admit_now("p", "k", 8, limits)
    assert adm is not None
    steps = {
        "whole request": request,
        "limits_now": lambda: svc.limits_now("p", "k"),
        "estimate": lambda: usage_mod.chat_prompt_tokens(DATA),
        "admit_now": lambda: svc.admit_now("p", "k", 8, limits),
        "headers": lambda: svc.headers(adm),
        "settle_now": lambda: (setattr(adm, "settled", False), svc.settle_now(adm, 30)),
    }
    for name, fn in steps.items():
        best = min(timeit.repeat(fn, timer=time.process_time, number=n, repeat=3))
        print(f"{name:16} {best / n * 1e6:6.2f} µs")
    print(f"(core: {core.BACKEND})")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 200_000))
