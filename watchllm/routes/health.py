"""Liveness (`/health`) and readiness (`/ready`, which names the backend that fails)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from watchllm import core, metrics
from watchllm.http.asgi import Request, Send, send_json

if TYPE_CHECKING:
    from watchllm.app import Gateway

READY_TIMEOUT_S = 2.0


async def health(gw: Gateway, req: Request, send: Send) -> None:
    await send_json(send, 200, {"status": "healthy", "mode": gw.env.mode, "core": core.BACKEND})


async def ready(gw: Gateway, req: Request, send: Send) -> None:
    names = list(gw.env.checks)
    results = await asyncio.gather(
        *(asyncio.wait_for(gw.env.checks[n](), READY_TIMEOUT_S) for n in names),
        return_exceptions=True,
    )
    checks = {n: ("ok" if r is None else f"error: {type(r).__name__}: {r}".strip())
              for n, r in zip(names, results, strict=True)}
    failing = [n for n, v in checks.items() if v != "ok"]
    for name, state in checks.items():
        metrics.set_backend_up(name, state == "ok")
    body = {"status": "ready" if not failing else "not_ready", "mode": gw.env.mode,
            "checks": checks, "failing": failing}
    await send_json(send, 200 if not failing else 503, body)
