"""The client: validate, buffer, send in the background.

    log_event()  ─► validate (watchllm.events.validation) ─► bounded buffer
                        background thread: a batch every `batch_size` events or
                        `flush_interval` seconds ─► Sender (retries, backoff, jitter)

Nothing here raises into the caller because logging failed: invalid events are dropped
and counted (`stats["invalid"]`), and every other failure is logged and counted too.
Buffer policy: at `max_buffer` events waiting, new events are dropped and counted
(`stats["dropped"]`); what is already buffered, older, keeps its place. Memory is
bounded by `max_buffer` events plus one batch in flight.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from watchllm import __version__
from watchllm.events.validation import new_event_id, now_ms, validate_event
from watchllm.sdk._events import EventHelpers
from watchllm.sdk._runs import Run, current_run
from watchllm.sdk._transport import Sender, Transport

log = logging.getLogger("watchllm.sdk")
_HOST = socket.gethostname()[:256]
_PLATFORM = f"python-{sys.version_info.major}.{sys.version_info.minor}-{sys.platform}"[:64]
_PLACEHOLDER_PROJECT = "sdk-default"  # validation needs one; the server uses the key's


class WatchLLM(EventHelpers):
    """`WatchLLM(api_key, base_url)`: log events to a WatchLLM gateway.

    Thread-safe; from asyncio code every method is non-blocking except `flush()` and
    `close()` (use `await aflush()` / `await aclose()` there)."""

    def __init__(
        self,
        api_key: str,
        base_url: str = "http://127.0.0.1:8080",
        *,
        project_id: str | None = None,
        batch_size: int = 100,
        flush_interval: float = 1.0,
        max_buffer: int = 10_000,
        max_retries: int = 5,
        timeout: float = 10.0,
        backoff: float = 0.5,
        environment: str = "",
        release: str = "",
        transport: Transport | None = None,
        on_error: Callable[[str, Any], None] | None = None,
    ) -> None:
        self.project_id = project_id
        self.batch_size = max(1, batch_size)
        self.flush_interval = flush_interval
        self.max_buffer = max_buffer
        self.defaults = {"env": environment, "release": release, "client_hostname": _HOST,
                         "client_sdk_version": f"python/{__version__}",
                         "client_platform": _PLATFORM}
        self.on_error = on_error
        self.stats = {"queued": 0, "sent": 0, "invalid": 0, "dropped": 0, "rejected": 0,
                      "failed": 0}
        self._sender = Sender(base_url, api_key, transport, timeout, max_retries, backoff)
        self._buf: deque[dict[str, Any]] = deque()
        self._cond = threading.Condition()
        self._inflight = 0
        self._flush_requested = False
        self._closed = False
        self._deadline: float | None = None
        self._thread = threading.Thread(target=self._loop, name="watchllm-sdk", daemon=True)
        self._thread.start()
        atexit.register(self._at_exit)

    # -- logging ----------------------------------------------------------------------
    def log_event(self, event_type: str, **fields: Any) -> str | None:
        """Validate and queue one event; returns its event_id, or None if it was not
        queued (invalid, buffer full, closed: see `stats`). Never raises."""
        try:
            return self._log(event_type, fields)
        except Exception as e:  # the caller's code must not fail because logging did
            self._report("internal", e)
            return None

    def _log(self, event_type: str, fields: dict[str, Any]) -> str | None:
        event: dict[str, Any] = {k: v for k, v in self.defaults.items() if v}
        run = current_run()
        if run is not None and run.client is self:
            event["run_id"] = run.run_id
        event.update({k: v for k, v in fields.items() if v is not None})
        event["event_type"] = event_type
        event.setdefault("event_id", new_event_id())
        event.setdefault("timestamp", now_ms())
        if self.project_id is not None:
            event.setdefault("project_id", self.project_id)
        _, errors = validate_event(event, default_project=_PLACEHOLDER_PROJECT)
        if errors:
            self.stats["invalid"] += 1
            self._report("invalid", [str(e) for e in errors])
            return None
        with self._cond:
            if self._closed or len(self._buf) >= self.max_buffer:
                self.stats["dropped"] += 1
                full = not self._closed
            else:
                self._buf.append(event)
                self.stats["queued"] += 1
                if len(self._buf) >= self.batch_size:
                    self._cond.notify()
                return str(event["event_id"])
        self._report("dropped", "buffer full" if full else "client closed")
        return None

    def run(self, name: str = "", run_id: str | None = None, **fields: Any) -> Run:
        """`with client.run("checkout") as run:` (or `async with`): events logged inside
        carry its run_id; `run.step(...)` records agent steps; an exception leaving the
        block is logged as an `error` event (and re-raised)."""
        return Run(self, name, run_id or new_event_id(), fields)

    def instrument_openai(self, openai_client: Any) -> Any:
        """Log every `chat.completions.create` of this openai client (sync or async) as a
        prompt_call (or error) event. Returns the same client."""
        from watchllm.sdk._openai import instrument

        return instrument(openai_client, self)

    # -- delivery ---------------------------------------------------------------------
    def flush(self, timeout: float = 10.0) -> bool:
        """Block until everything queued so far was sent (or given up); False on timeout."""
        end = time.monotonic() + timeout
        with self._cond:
            self._flush_requested = True
            self._cond.notify()
            while self._buf or self._inflight:
                left = end - time.monotonic()
                if left <= 0 or not self._thread.is_alive():
                    return False
                self._cond.wait(left)
        return True

    def close(self, timeout: float = 10.0) -> None:
        """Flush (for at most `timeout` seconds) and stop; later events are dropped."""
        with contextlib.suppress(Exception):
            atexit.unregister(self._at_exit)
        with self._cond:
            if self._closed:
                return
            self._deadline = time.monotonic() + timeout
        self.flush(timeout)
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout=max(0.1, self._deadline - time.monotonic()))

    async def aflush(self, wait_s: float = 10.0) -> bool:
        """`flush()` without blocking the event loop (it runs on a worker thread)."""
        return await asyncio.to_thread(self.flush, wait_s)

    async def aclose(self, wait_s: float = 10.0) -> None:
        await asyncio.to_thread(self.close, wait_s)

    def __enter__(self) -> WatchLLM:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> WatchLLM:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def _at_exit(self) -> None:
        self.close(timeout=5.0)

    def _report(self, kind: str, detail: Any) -> None:
        log.warning("watchllm: %s event: %s", kind, detail)
        if self.on_error is not None:
            with contextlib.suppress(Exception):
                self.on_error(kind, detail)

    # -- background thread ------------------------------------------------------------
    def _batches(self) -> Iterator[list[dict[str, Any]]]:
        while True:
            with self._cond:
                due = time.monotonic() + self.flush_interval
                while (len(self._buf) < self.batch_size and not self._flush_requested
                       and not self._closed and (left := due - time.monotonic()) > 0):
                    self._cond.wait(left)
                if not self._buf:
                    self._flush_requested = False
                    self._cond.notify_all()
                    if self._closed:
                        return
                    continue
                take = min(len(self._buf), self.batch_size)
                batch = [self._buf.popleft() for _ in range(take)]
                self._inflight = len(batch)
            yield batch

    def _loop(self) -> None:
        for batch in self._batches():
            try:
                out = self._sender.send(batch, self._deadline, lambda: self._closed)
                self.stats["sent"] += out.sent
                self.stats["rejected"] += out.rejected
                self.stats["failed"] += out.failed
            except Exception as e:  # keep the thread alive whatever happens
                self.stats["failed"] += len(batch)
                self._report("internal", e)
            finally:
                with self._cond:
                    self._inflight = 0
                    self._cond.notify_all()
