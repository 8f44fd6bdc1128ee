"""The current request's ExecutionContext, for `waitUntil`.

One Env serves every request of an isolate, but `waitUntil` belongs to a request. The
Worker entry sets `current_ctx` before it starts the app for a request; asyncio copies
context variables into the tasks the request creates, so code deep inside the app (the
queue producer) reaches the right request's `ctx` even when requests interleave.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from contextvars import ContextVar
from typing import Any

from watchllm.env.cloudflare._js import promise

log = logging.getLogger("watchllm.cloudflare")
current_ctx: ContextVar[Any] = ContextVar("watchllm_cf_ctx", default=None)
# Background work with no request to attach to (tests, start-up): kept referenced here so
# it is not garbage-collected mid-flight.
_orphans: set[asyncio.Future[Any]] = set()


def wait_until(work: Awaitable[Any]) -> asyncio.Future[Any]:
    """Run `work` in the background; the runtime keeps the request alive until it ends."""
    task = asyncio.ensure_future(work)
    ctx = current_ctx.get()
    if ctx is not None:
        try:
            ctx.waitUntil(promise(task))
            return task
        except Exception as exc:  # the request already finished: keep it referenced
            log.debug("waitUntil refused (%s); tracking the task locally", exc)
    _orphans.add(task)
    task.add_done_callback(_orphans.discard)
    return task
