"""EventQueue on Cloudflare Queues (the producer half; `consumer.py` is the other).

`put()` appends to an isolate-local buffer and schedules one send for whatever is
buffered, handed to the request's `ctx.waitUntil`: the response never waits for Queues,
and the runtime keeps the isolate alive until the send is done. Messages are JSON text
(one event each); `sendBatch` takes at most 100 messages and 256 KB, a message at most
128 KB, so batches are cut to fit and an event too large even after its prompt and
response are shortened is dropped and counted, never raised.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

from watchllm.env.base import Row
from watchllm.env.cloudflare._js import error_text, js_value, unwrap
from watchllm.env.cloudflare.context import wait_until

log = logging.getLogger("watchllm.cloudflare")
MAX_BATCH_MESSAGES = 100
MAX_BATCH_BYTES = 256_000
MAX_MESSAGE_BYTES = 128_000
_ENVELOPE = 200  # bytes Queues counts per message beyond its body (conservative)


def encode_event(event: Row) -> str | None:
    """The message body for an event, shortened to fit; None when it cannot fit."""
    text = json.dumps(event, default=str, separators=(",", ":"), ensure_ascii=False)
    if len(text.encode()) + _ENVELOPE <= MAX_MESSAGE_BYTES:
        return text
    event = dict(event)
    for field in ("prompt", "response", "properties", "error_message"):
        if isinstance(event.get(field), str):
            event[field] = event[field][:8000] + "…[truncated]"
    text = json.dumps(event, default=str, separators=(",", ":"), ensure_ascii=False)
    return text if len(text.encode()) + _ENVELOPE <= MAX_MESSAGE_BYTES else None


class QueuesEventQueue:
    def __init__(self, binding: Any,
                 schedule: Callable[[Any], asyncio.Future[Any]] = wait_until) -> None:
        self._queue = unwrap(binding)
        self._schedule = schedule
        self._buf: list[str] = []
        self._sending: set[asyncio.Future[Any]] = set()
        self.accepted = self.dropped = self.sent = self.failed = 0
        self._closed = False

    def put(self, event: Row) -> None:
        try:
            if self._closed or not isinstance(event, dict):
                self.dropped += 1
                return
            body = encode_event(event)
            if body is None:
                self.dropped += 1
                log.warning("event %s dropped: larger than a Queues message (128 KB)",
                            event.get("event_id"))
                return
            self._buf.append(body)
            self.accepted += 1
            if len(self._buf) == 1:  # first event since the last send: schedule one
                task = self._schedule(self._send())
                self._sending.add(task)
                task.add_done_callback(self._sending.discard)
        except Exception:  # put never raises
            self.dropped += 1
            log.exception("event dropped")

    def depth(self) -> int:
        return len(self._buf)

    async def _send(self) -> None:
        await asyncio.sleep(0)  # let the rest of this request's events join the batch
        while self._buf:
            batch: list[str] = []
            size = 0
            while self._buf and len(batch) < MAX_BATCH_MESSAGES:
                n = len(self._buf[0].encode()) + _ENVELOPE
                if batch and size + n > MAX_BATCH_BYTES:
                    break
                batch.append(self._buf.pop(0))
                size += n
            messages = [{"body": b, "contentType": "text"} for b in batch]
            try:
                await self._queue.sendBatch(js_value(messages))
                self.sent += len(batch)
            except Exception as exc:
                # Queues is down or refused the batch: the events are lost (counted). A
                # Worker has no disk to spool to; Queues' own durability starts at send.
                self.failed += len(batch)
                log.error("Queues sendBatch failed for %d event(s): %s", len(batch),
                          error_text(exc))

    async def flush(self) -> None:
        while self._buf or self._sending:
            if self._sending:
                await asyncio.gather(*list(self._sending), return_exceptions=True)
            if self._buf:
                await self._send()

    async def close(self) -> None:
        if not self._closed:
            await self.flush()
        self._closed = True
