"""The durable event pipeline: request path → memory → spool on disk → ClickHouse.

::

    put(event)            append to a bounded deque; never blocks, never raises
      │  writer thread    JSON-encode a batch, append it to the spool as one record
      ▼                   (one write, fsync by policy): from here a crash loses nothing
    spool (spool.py)
      │  shipper task     read N events or what arrived in T ms; encode RowBinary
      ▼                   (watchllm.core) on a helper thread; insert; then ack the spool
    Analytics.insert_rowbinary

Failures of the sink:
- any exception except ValueError means "not now" (ClickHouse down, table detached):
  the batch is retried with exponential backoff and jitter; events keep flowing into
  the spool meanwhile (up to ``max_bytes``, then new events are dropped and counted).
- ValueError (the adapter's "rejected": bad data) and RowBinaryError from the encoder
  mean "never": the batch is bisected until the bad events are isolated; those go to the
  dead-letter JSONL file with the error, the rest is inserted.

Delivery is at-least-once: a crash between insert and ack re-sends that batch, and the
ReplacingMergeTree tables collapse the duplicates by event_id (see docs/pipeline.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import random
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

from watchllm import core
from watchllm.env.base import Analytics, Row
from watchllm.events.schema import TABLES
from watchllm.events.spool import FsyncPolicy, Position, Spool

log = logging.getLogger("watchllm.events")
RECORD_EVENTS = 2000  # most events the writer puts in one spool record
Columns = list[tuple[str, str]]
_ENUM_ZERO = re.compile(r"^Enum(?:8|16)\(.*?'([^']*)' = 0\b")


def default_route(event: Row) -> tuple[str, ...]:
    """Every event goes to `events`; tool calls and agent steps also to their own table."""
    kind = event.get("event_type")
    if kind == "tool_call":
        return ("events", "tool_calls")
    if kind == "agent_step":
        return ("events", "agent_steps")
    return ("events",)


def _json_default(value: Any) -> Any:
    if isinstance(value, dt.datetime):  # DateTime64(3) as epoch milliseconds
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return int(value.timestamp() * 1000)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def dumps(event: Any) -> bytes:
    return orjson.dumps(event, default=_json_default, option=orjson.OPT_PASSTHROUGH_DATETIME)


@dataclass(slots=True)
class Metrics:
    accepted: int = 0
    dropped: int = 0  # refused: memory buffer or spool full, or closed
    spooled: int = 0
    batches_sent: int = 0
    batches_failed: int = 0  # insert attempts that failed (each retry counts)
    events_sent: int = 0
    dead_lettered: int = 0
    insert_seconds_total: float = 0.0
    insert_seconds_max: float = 0.0
    insert_seconds_last: float = 0.0


@dataclass(slots=True)
class Batch:
    end: Position  # spool position to ack once every table has the rows
    count: int  # events in the spool records (dead-lettered ones included)
    events: int
    tables: dict[str, list[Row]] = field(default_factory=dict)
    encoded: dict[str, bytes] = field(default_factory=dict)  # RowBinary of tables[t]


class EventPipeline:
    """An EventQueue that stores every accepted event in ClickHouse (or the dead-letter file)."""

    def __init__(
        self,
        sink: Analytics,
        spool_dir: Path | str,
        *,
        batch_size: int = 20_000,
        flush_ms: float = 1000.0,
        max_bytes: int = 1 << 30,
        buffer: int = 100_000,
        fsync: FsyncPolicy = "interval",
        backoff_s: float = 0.1,
        backoff_max_s: float = 30.0,
        dead_letter: Path | str | None = None,
        drain_timeout_s: float = 10.0,
        hot_bytes: int = 64 << 20,
        route: Callable[[Row], Sequence[str]] = default_route,
        tables: dict[str, tuple[tuple[str, str], ...]] = TABLES,
    ) -> None:
        self.sink = sink
        self.batch_size = batch_size
        self.flush_s = flush_ms / 1000
        self.backoff_s, self.backoff_max_s = backoff_s, backoff_max_s
        self.route = route
        self.drain_timeout_s = drain_timeout_s
        self.columns: dict[str, Columns] = {t: list(c) for t, c in tables.items()}
        self.metrics = Metrics()
        events_columns = tables.get("events", ())
        self._event_columns = {c for c, _ in events_columns}
        self._enum_defaults = {
            c: m.group(1) for c, t in events_columns if (m := _ENUM_ZERO.search(t))
        }
        self.spool = Spool(spool_dir, max_bytes=max_bytes, fsync=fsync)
        self.dead_letter_path = Path(dead_letter or Path(spool_dir) / "dead-letter.jsonl")
        self._buf: deque[Any] = deque()
        self._capacity = buffer
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._written = 0  # puts the writer has finished with (spooled or dropped)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._progress: asyncio.Event | None = None
        self._urgent = 0
        self._closed = False
        self._writer: threading.Thread | None = None
        self._shipper: asyncio.Task[None] | None = None
        # Records just spooled, still in memory: (position before, after, events, JSON bytes).
        self._hot: deque[tuple[Position, Position, list[Row], int]] = deque()
        self._hot_bytes = 0
        self.hot_bytes = hot_bytes
        self._hot_lock = threading.Lock()
        self._helper = ThreadPoolExecutor(1, thread_name_prefix="watchllm-events-encode")

    # -- EventQueue ------------------------------------------------------------------
    def put(self, event: Row) -> None:
        if self._closed or len(self._buf) >= self._capacity:
            self.metrics.dropped += 1
            return
        self._buf.append(event)
        self.metrics.accepted += 1
        if not self._wake.is_set():
            self._wake.set()

    def depth(self) -> int:
        return len(self._buf) + self.spool.pending_events

    async def start(self) -> EventPipeline:
        self._loop = asyncio.get_running_loop()
        self._progress = asyncio.Event()
        self._writer = threading.Thread(target=self._write_loop, name="watchllm-spool", daemon=True)
        self._writer.start()
        self._shipper = asyncio.create_task(self._ship_loop(), name="watchllm-shipper")
        return self

    async def flush(self) -> None:
        """Wait until every event accepted so far is in the sink (or dead-lettered).

        Waits as long as the sink is down; bound it with `asyncio.timeout`."""
        target = self.metrics.accepted
        while self._written < target:
            await self._wait_progress(0.05)
        end = self.spool.committed()
        self._urgent += 1
        try:
            while self.spool.acked < end and self.spool.pending_events:
                await self._wait_progress(0.05)
        finally:
            self._urgent -= 1

    async def wait_spooled(self) -> int:
        """Wait until every event accepted so far has been through the writer: on disk
        (durable: survives kill -9) or refused. Returns the `dropped` total, so a caller
        can tell whether any were refused meanwhile. Bound it with `asyncio.timeout`."""
        target = self.metrics.accepted
        while self._written < target:
            await self._wait_progress(0.005)
        return self.metrics.dropped

    async def close(self) -> None:
        """Drain into the sink for up to `drain_timeout_s`; what is left stays in the spool
        (durable: it is delivered by the next process that opens this spool)."""
        if self._closed:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.drain_timeout_s):
                await self.flush()
        self._closed = True
        self._stop.set()
        self._wake.set()
        if self._writer is not None:
            await asyncio.to_thread(self._writer.join)
        if self._shipper is not None:
            self._shipper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._shipper
        self._helper.shutdown(wait=True)
        self.spool.close()

    def snapshot(self) -> dict[str, float]:
        """Metrics as flat numbers (queue depth, spool bytes, batches, latency...)."""
        out: dict[str, float] = asdict(self.metrics)
        out["queue_depth"] = self.depth()
        out["spool_bytes"] = self.spool.pending_bytes
        out["spool_corrupt_bytes"] = self.spool.corrupt_bytes
        return out

    # -- writer thread: memory -> spool ------------------------------------------------
    def _write_loop(self) -> None:
        while True:
            if not self._buf:
                if self._stop.is_set():
                    return
                self.spool.sync_if_due()
                self._wake.wait(self.spool.fsync_interval_s)
                self._wake.clear()
                continue
            take = min(len(self._buf), RECORD_EVENTS, self.batch_size)
            items = [self._buf.popleft() for _ in range(take)]
            lines: list[bytes] = []
            good: list[Row] = []
            for item in items:
                try:
                    lines.append(dumps(item))
                except (TypeError, ValueError) as e:
                    self._dead_letter([(None, repr(item), f"not JSON-serialisable: {e}")])
                else:
                    good.append(item)
            prev = self.spool.committed()
            try:
                end = self.spool.append(lines)
            except OSError as e:  # disk full or gone: nothing durable to promise
                log.error("event spool write failed, %d events dropped: %s", len(lines), e)
                end = None
            if end is None:
                self.metrics.dropped += len(lines)
            else:
                self.metrics.spooled += len(lines)
                self._keep_hot(prev, end, good, sum(map(len, lines)))
            self._written += take
            self._notify()

    def _keep_hot(self, prev: Position, end: Position, items: list[Row], size: int) -> None:
        """Keep a just-spooled record's events in memory (bounded) so that the shipper
        need not read and parse them back from disk when it is keeping up."""
        with self._hot_lock:
            if items and self._hot_bytes + size <= self.hot_bytes:
                self._hot.append((prev, end, items, size))
                self._hot_bytes += size

    def _take_hot(self, cursor: Position) -> tuple[list[Row], Position, int] | None:
        """Events of the records right after `cursor`, if they are still in memory."""
        with self._hot_lock:
            while self._hot and self._hot[0][1] <= cursor:
                self._hot_bytes -= self._hot.popleft()[3]
            events: list[Row] = []
            pos, count = cursor, 0
            while (self._hot and self._hot[0][0] == pos
                   and (not count or count + len(self._hot[0][2]) <= self.batch_size)):
                _, pos, items, size = self._hot.popleft()
                self._hot_bytes -= size
                events += items
                count += len(items)
        return (events, pos, count) if count else None

    def _notify(self) -> None:
        loop, progress = self._loop, self._progress
        if loop is None or progress is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop has closed
            if loop is _running_loop():
                progress.set()
            else:
                loop.call_soon_threadsafe(progress.set)

    async def _wait_progress(self, at_most_s: float) -> None:
        assert self._progress is not None
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(at_most_s):
                await self._progress.wait()
        self._progress.clear()

    # -- shipper: spool -> sink --------------------------------------------------------
    async def _ship_loop(self) -> None:
        cursor = self.spool.acked
        batch: Batch | None = None
        prefetch: asyncio.Task[Batch | None] | None = None
        failures = 0
        while True:
            if batch is None and prefetch is None:
                pending = self.spool.pending_events
                if not pending:
                    await self._wait_progress(0.05)
                    continue
                if pending < self.batch_size and not self._urgent:
                    # Wait for a full batch, at most flush_ms after we saw the first event.
                    deadline = time.monotonic() + self.flush_s
                    while (self.spool.pending_events < self.batch_size and not self._urgent
                           and (left := deadline - time.monotonic()) > 0):
                        await self._wait_progress(min(left, 0.05))
            try:
                if batch is None:
                    if prefetch is not None:
                        task, prefetch = prefetch, None
                        batch = await task
                    else:
                        batch = await self._next_batch(cursor)
                    if batch is None:
                        continue
                if prefetch is None and self.spool.pending_events - batch.count >= self.batch_size:
                    # A backlog: prepare the next batch while this one is being inserted.
                    prefetch = asyncio.create_task(self._next_batch(batch.end))
                await self._send(batch)
                cursor = batch.end
                batch, failures = None, 0
            except asyncio.CancelledError:
                if prefetch is not None:
                    prefetch.cancel()
                raise
            except Exception as e:
                self.metrics.batches_failed += 1
                delay = min(self.backoff_max_s, self.backoff_s * 2**failures)
                failures += 1
                log.warning("event insert failed (attempt %d), retrying in %.2fs: %s: %s",
                            failures, delay, type(e).__name__, e)
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))

    async def _next_batch(self, cursor: Position) -> Batch | None:
        hot = self._take_hot(cursor)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._helper, self._prepare, cursor, hot)

    def _prepare(
        self, cursor: Position, hot: tuple[list[Row], Position, int] | None
    ) -> Batch | None:
        """The batch after `cursor`, routed to tables and encoded (on the helper thread)."""
        if hot is not None:
            events, end, count = hot
        else:
            records, end = self.spool.read(cursor, self.batch_size)
            if end == cursor:
                return None
            events = self._decode(records)
            count = sum(r.count for r in records)
        batch = Batch(end, count, len(events))
        for ev in events:
            if ev.get("event_type") != "prompt_call":
                self._complete(ev)
            for table in self.route(ev):
                batch.tables.setdefault(table, []).append(ev)
        for table, rows in batch.tables.items():
            if table not in self.columns:
                self._dead_letter([(table, r, f"no table {table!r} in the schema") for r in rows])
                rows.clear()
                continue
            good, batch.encoded[table] = self._encode(table, rows)
            rows[:] = good  # a retry of this batch does not dead-letter these rows twice
        return batch

    def _complete(self, ev: Row) -> None:
        """Fill what other event types leave out: enum columns default to their 0 label,
        fields without a column of their own go to `properties` (JSON)."""
        for col, label in self._enum_defaults.items():
            ev.setdefault(col, label)
        if "properties" not in ev:
            extra = {k: v for k, v in ev.items() if k not in self._event_columns}
            if extra:
                ev["properties"] = dumps(extra).decode()

    async def _send(self, batch: Batch) -> None:
        """Insert each table's rows (tables already done are not sent again), then ack."""
        loop = asyncio.get_running_loop()
        for table in list(batch.tables):
            if batch.tables[table]:
                await self._insert(table, batch.tables[table], batch.encoded.get(table))
            del batch.tables[table]
        await loop.run_in_executor(self._helper, self.spool.ack, batch.end, batch.count)
        self.metrics.batches_sent += 1
        self.metrics.events_sent += batch.events
        self._notify()

    def _decode(self, records: list[Any]) -> list[Row]:
        events: list[Row] = []
        for rec in records:
            for line in rec.payload.split(b"\n"):
                try:
                    ev = orjson.loads(line)
                except orjson.JSONDecodeError as e:
                    self._dead_letter([(None, line.decode(errors="replace"), f"bad JSON: {e}")])
                    continue
                if isinstance(ev, dict):
                    events.append(ev)
                else:
                    self._dead_letter([(None, ev, "an event must be a JSON object")])
        return events

    def _encode(self, table: str, rows: list[Row]) -> tuple[list[Row], bytes]:
        """RowBinary of `rows`; rows the encoder rejects are dead-lettered and left out."""
        columns = self.columns[table]
        while True:
            try:
                return rows, core.encode_rowbinary(columns, rows)
            except core.RowBinaryError as e:
                bad = getattr(e, "row", None)
                if not isinstance(bad, int) or not 0 <= bad < len(rows):
                    raise
                self._dead_letter([(table, rows[bad], str(e))])
                rows = rows[:bad] + rows[bad + 1 :]

    async def _insert(self, table: str, rows: list[Row], data: bytes | None = None) -> None:
        if data is None:
            loop = asyncio.get_running_loop()
            good, data = await loop.run_in_executor(self._helper, self._encode, table, rows)
            rows[:] = good
        if not rows:
            return
        assert data is not None
        names = [c for c, _ in self.columns[table]]
        started = time.perf_counter()
        try:
            await self.sink.insert_rowbinary(table, names, data)
        except ValueError as e:  # rejected: isolate the bad rows
            if len(rows) == 1:
                self._dead_letter([(table, rows[0], f"{type(e).__name__}: {e}")])
                return
            self.metrics.batches_failed += 1
            half = len(rows) // 2
            await self._insert(table, rows[:half])
            await self._insert(table, rows[half:])
            return
        took = time.perf_counter() - started
        m = self.metrics
        m.insert_seconds_total += took
        m.insert_seconds_last = took
        m.insert_seconds_max = max(m.insert_seconds_max, took)

    def _dead_letter(self, items: list[tuple[str | None, Any, str]]) -> None:
        at = dt.datetime.now(dt.UTC).isoformat()
        lines = b"".join(
            orjson.dumps({"at": at, "table": t, "error": err, "event": ev},
                         default=repr, option=orjson.OPT_APPEND_NEWLINE)
            for t, ev, err in items
        )
        self.dead_letter_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.dead_letter_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, lines)
            os.fsync(fd)
        finally:
            os.close(fd)
        self.metrics.dead_lettered += len(items)
        log.error("dead-lettered %d event(s) into %s: %s", len(items), self.dead_letter_path,
                  items[0][2])


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
