"""The durable event pipeline: request path → memory → spool on disk → ClickHouse.

::

    put(event)            append to a bounded deque; never blocks, never raises
      │  writer thread    JSON-encode a batch (one array), append it to the spool as one
      ▼                   record (one writev, fsync by policy): from here a crash loses nothing
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

Delivery is at-least-once: a crash between insert and ack re-sends that batch. The spool
replays exactly the batch that was in flight and every insert carries a deduplication
token derived from its spool position (batches.py), so ClickHouse drops the repeat, in
the tables and in the materialized views; ReplacingMergeTree collapses any other
duplicate by event_id (see docs/pipeline.md). Helpers: batches.py (routing, encoding,
tokens, the in-memory records), deadletter.py (the dead-letter file), rows.py (the
event-row rules shared with the Workers consumer).

Orphaned slots: every `adopt_every_s` an adopter task looks for spool slots with
undelivered events whose owner is gone (`spool.orphan_slots`: the worker count shrank)
and claims one at a time with the slot's flock, so two live workers never drain the same
slot. It ships the slot like its own (the slot's id in the tokens, its in-flight batch
replayed first), then releases it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from watchllm.env.base import Analytics, Row
from watchllm.events.batches import Batch, BatchBuilder, Columns, HotRecords, dedup_token, dumps
from watchllm.events.deadletter import DeadLetterFile, Item
from watchllm.events.rows import route as default_route
from watchllm.events.schema import TABLES
from watchllm.events.spool import (
    MAX_PAYLOAD,
    FsyncPolicy,
    Position,
    Spool,
    SpoolBusy,
    orphan_slots,
)
from watchllm.scheduling import background_priority

__all__ = ["EventPipeline", "Metrics", "default_route", "dumps"]
log = logging.getLogger("watchllm.events")
RECORD_EVENTS = 2000  # most events the writer puts in one spool record
RECORD_BYTES = 8 << 20  # a larger record is split (unless it is one event)
IDLE_CHECK_S = 1.0  # an idle shipper looks at the spool this often even if not woken


@dataclass(slots=True)
class Metrics:
    accepted: int = 0
    dropped: int = 0  # refused: memory buffer or spool full, or closed
    spooled: int = 0
    batches_sent: int = 0
    batches_failed: int = 0  # insert attempts that failed (each retry counts)
    events_sent: int = 0
    dead_lettered: int = 0
    slots_adopted: int = 0  # orphaned spool slots drained by this process
    events_reinserted: int = 0  # raw events found missing after a crash replay
    view_hours_rebuilt: int = 0  # usage_hourly hours repaired after a crash replay
    insert_seconds_total: float = 0.0
    insert_seconds_max: float = 0.0
    insert_seconds_last: float = 0.0


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
        linger_ms: float = 5.0,
        route: Callable[[Row], Sequence[str]] = default_route,
        tables: dict[str, tuple[tuple[str, str], ...]] = TABLES,
        adopt_every_s: float = 10.0,
        idle: bool = False,
    ) -> None:
        self.sink = sink
        self.batch_size = batch_size
        self.flush_s = flush_ms / 1000
        self.linger_s = linger_ms / 1000
        self.backoff_s, self.backoff_max_s = backoff_s, backoff_max_s
        self.route = route
        self.drain_timeout_s = drain_timeout_s
        self.columns: dict[str, Columns] = {t: list(c) for t, c in tables.items()}
        self.metrics = Metrics()
        self.spool = Spool(spool_dir, max_bytes=max_bytes, fsync=fsync)
        self.adopt_every_s = adopt_every_s  # 0: never adopt orphaned slots
        self._adopter: asyncio.Task[None] | None = None
        self._adopted: Spool | None = None
        self.dead_letter = DeadLetterFile(dead_letter or Path(spool_dir) / "dead-letter.jsonl")
        self.dead_letter_path = self.dead_letter.path
        self.builder = BatchBuilder(self.columns, route, self._dead_letter)
        self._buf: deque[Any] = deque()
        self._capacity = buffer
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._written = 0  # puts the writer has finished with (spooled or dropped)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._progress: asyncio.Event | None = None
        self._urgent = 0  # flush() waits for acks: ship what there is, now
        # The shipper sleeps while the spool is empty: the writer wakes it when it spools
        # into an empty one (set before the shipper checks the spool, read by the writer
        # after it appends, so one of them sees the other; see _ship_loop).
        self._ship_idle = False
        self._waiting = 0  # flush() / wait_spooled() wait for the writer: no linger
        self._closed = False
        self._writer: threading.Thread | None = None
        self._shipper: asyncio.Task[None] | None = None
        self._hot = HotRecords(hot_bytes)  # records just spooled, still in memory
        # Batches are built and encoded from the spool (already durable): with `idle`, under
        # SCHED_IDLE, so they never take the core from a request (watchllm/scheduling.py).
        self._helper = ThreadPoolExecutor(1, thread_name_prefix="watchllm-events-encode",
                                          initializer=background_priority if idle else None)

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
        if self.adopt_every_s > 0:
            self._adopter = asyncio.create_task(self._adopt_loop(), name="watchllm-adopter")
        return self

    async def flush(self) -> None:
        """Wait until every event accepted so far is in the sink (or dead-lettered).

        Waits as long as the sink is down; bound it with `asyncio.timeout`."""
        await self._wait_written(self.metrics.accepted, 0.05)
        end = self.spool.committed()
        self._urgent += 1
        if self._progress is not None:
            self._progress.set()  # a shipper gathering a batch ships it now
        try:
            while self.spool.acked < end and self.spool.pending_events:
                await self._wait_progress(0.05)
        finally:
            self._urgent -= 1

    async def wait_spooled(self) -> int:
        """Wait until every event accepted so far has been through the writer: on disk
        (durable: survives kill -9) or refused. Returns the `dropped` total, so a caller
        can tell whether any were refused meanwhile. Bound it with `asyncio.timeout`."""
        await self._wait_written(self.metrics.accepted, 0.005)
        return self.metrics.dropped

    async def _wait_written(self, target: int, poll_s: float) -> None:
        """Until the writer has handled `target` events (it wakes the loop for waiters)."""
        self._waiting += 1
        try:
            while self._written < target:
                await self._wait_progress(poll_s)
        finally:
            self._waiting -= 1

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
        for task in (self._shipper, self._adopter):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._helper.shutdown(wait=True)
        self.spool.close()
        if self._adopted is not None:  # undelivered rest: the next adopter's
            self._adopted.close()
            self._adopted = None

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
                self._wake.wait(self.spool.fsync_interval_s)  # idle: until the next put()
                self._wake.clear()
                continue
            take = min(len(self._buf), RECORD_EVENTS, self.batch_size)
            items = [self._buf.popleft() for _ in range(take)]
            self._spool_items(items)
            self._written += take
            # Waking the event loop costs more than writing a small record: only when a
            # caller waits (flush, wait_spooled), the shipper sleeps on an empty spool, or
            # a full batch is ready. A shipper gathering a batch wakes at its deadline.
            if (self._waiting or self._urgent or self._ship_idle
                    or self.spool.pending_events >= self.batch_size):
                self._notify()
            if (self.linger_s and not self._buf and not self._waiting
                    and not self._stop.is_set()):
                # Busy: let the next linger_ms of events gather into one record instead
                # of a wake-up per put() (a wake-up costs ~25 µs of CPU on this VM, more
                # than writing the record). Idle, the first put() wakes the writer at once.
                time.sleep(self.linger_s)

    def _spool_items(self, items: list[Row]) -> None:
        """Append `items` as one record: one JSON array from one encoder call (~0.7 µs an
        event, against ~5 µs for a call per event; bench/micro/spool_encode.py). A group
        that does not encode, or encodes to more than RECORD_BYTES, is halved until each
        part does: an event orjson cannot encode, or one too large for any record, is
        dead-lettered alone."""
        try:
            payload = dumps(items)
        except (TypeError, ValueError) as e:
            if len(items) == 1:
                self._dead_letter([(None, repr(items[0]), f"not JSON-serialisable: {e}")])
                return
            payload = None
        if payload is None or (len(payload) > RECORD_BYTES and len(items) > 1):
            half = len(items) // 2
            self._spool_items(items[:half])
            self._spool_items(items[half:])
            return
        if len(payload) > MAX_PAYLOAD:
            self._dead_letter([(None, repr(items[0])[:2000],
                                f"event too large for the spool ({len(payload)} bytes)")])
            return
        prev = self.spool.committed()
        try:
            end = self.spool.append_array(payload, len(items))
        except OSError as e:  # disk full or gone: nothing durable to promise
            log.error("event spool write failed, %d events dropped: %s", len(items), e)
            end = None
        if end is None:
            self.metrics.dropped += len(items)
        else:
            self.metrics.spooled += len(items)
            self._hot.keep(prev, end, items, len(payload))

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
                # Idle: sleep until the writer spools something (it wakes us, _ship_idle),
                # not on a poll: a wake-up costs ~0.1-0.3 ms of CPU, 20 a second idle.
                self._ship_idle = True
                try:
                    pending = self.spool.pending_events
                    if not pending:
                        await self._wait_progress(IDLE_CHECK_S)
                        continue
                finally:
                    self._ship_idle = False
                if pending < self.batch_size and not self._urgent:
                    # Wait for a full batch, at most flush_ms after we saw the first event
                    # (the writer wakes us for a full batch, flush() when it is urgent).
                    deadline = time.monotonic() + self.flush_s
                    while (self.spool.pending_events < self.batch_size and not self._urgent
                           and (left := deadline - time.monotonic()) > 0):
                        await self._wait_progress(left)
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
                failures += 1
                await self._backoff(failures, e)

    async def _backoff(self, failures: int, e: Exception) -> None:
        self.metrics.batches_failed += 1
        delay = min(self.backoff_max_s, self.backoff_s * 2 ** (failures - 1))
        log.warning("event insert failed (attempt %d), retrying in %.2fs: %s: %s",
                    failures, delay, type(e).__name__, e)
        await asyncio.sleep(delay * random.uniform(0.5, 1.0))

    async def _next_batch(self, cursor: Position, spool: Spool | None = None) -> Batch | None:
        """The next batch of `spool` (default: this process's own, whose just-spooled
        records are still in memory)."""
        spool = spool or self.spool
        replay = spool.replay
        limit = replay[1] if replay is not None and replay[0] == cursor else self.batch_size
        hot = self._hot.take(cursor, limit) if spool is self.spool else None
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._helper, self._prepare, spool, cursor, hot,
                                          limit)

    def _prepare(self, spool: Spool, cursor: Position,
                 hot: tuple[list[Row], Position, int] | None, limit: int) -> Batch | None:
        """The batch after `cursor`, routed to tables and encoded (on the helper thread).
        After a restart its first batch is the one that was in flight (`limit`), so the
        re-sent inserts carry the same tokens."""
        if hot is not None:
            events, end, count = hot
        else:
            records, end = spool.read(cursor, limit)
            if end == cursor:
                return None
            events = self.builder.decode(records)
            count = sum(r.count for r in records)
        return self.builder.build(spool.slot_id, cursor, end, count, events)

    async def _send(self, batch: Batch, spool: Spool | None = None) -> None:
        """Insert each table's rows (tables already done are not sent again), then ack."""
        spool = spool or self.spool
        loop = asyncio.get_running_loop()
        replay = spool.replay
        if replay is not None and replay[0] == batch.start and batch.replay_rows is None:
            batch.replay_rows = list(batch.tables.get("events", ()))
        if batch.tables:
            await loop.run_in_executor(self._helper, spool.begin, batch.start, batch.count)
        for table in list(batch.tables):
            if batch.tables[table]:
                await self._insert(table, batch.tables[table], batch.base(table),
                                   batch.encoded.get(table), batch.tokens.get(table),
                                   batch.rejected if table == "events" else None)
            del batch.tables[table]
        if batch.replay_rows:
            await self._check_replay(batch.replay_rows, batch.rejected, batch.base("events"))
            batch.replay_rows = []  # checked: a retry of the ack does not check again
        await loop.run_in_executor(self._helper, spool.ack, batch.end, batch.count)
        self.metrics.batches_sent += 1
        self.metrics.events_sent += batch.events
        self._notify()

    async def _check_replay(self, events: list[Row], rejected: set[str], base: str) -> None:
        """After the replay of a batch a crash left in flight, with a sink that can say
        (`lost_events`, `repair_after_replay`: chDB in this process): re-insert the events
        the raw table lacks, then have the view's hours that disagree rebuilt. Before the
        ack, and a failure to find or re-insert lost events fails the send (retried like
        an insert): a crash or retry checks again, and the re-insert's token is new each
        time (what is missing is looked up first, so a repeat cannot double anything).
        The view is derived (`watchllm rebuild-usage` redoes it): its repair is best effort."""
        lost_events = getattr(self.sink, "lost_events", None)
        repair = getattr(self.sink, "repair_after_replay", None)
        if lost_events is None or repair is None:
            return
        ids = [str(e["event_id"]) for e in events
               if e.get("event_id") and str(e["event_id"]) not in rejected]
        stamps = _epoch_ms(events)
        span = (min(stamps), max(stamps)) if stamps else None
        lost = await lost_events(ids, span)
        if lost:
            rows = [e for e in events if str(e.get("event_id")) in lost]
            again: set[str] = set()
            await self._insert("events", rows, f"{base}.after-crash.{uuid.uuid4().hex}",
                               rejected=again)
            self.metrics.events_reinserted += len(rows) - len(again)
            log.warning("events: %d event(s) of the replayed batch were missing after a "
                        "crash and were inserted again (docs/pipeline.md)", len(rows))
        try:
            fixed = await repair({ms // 3_600_000 * 3600 for ms in stamps})
        except Exception as e:
            log.warning("usage_hourly not checked after the crash replay: %s: %s",
                        type(e).__name__, e)
            return
        if fixed:
            self.metrics.view_hours_rebuilt += len(fixed)
            log.warning("usage_hourly: %d hour(s) rebuilt from the raw events after a "
                        "crash (docs/pipeline.md)", len(fixed))

    # -- adopter: orphaned slots -> sink ----------------------------------------------
    async def _adopt_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.adopt_every_s)
            try:
                found = await loop.run_in_executor(self._helper, lambda: orphan_slots(
                    self.spool.root, exclude=self.spool.dir))
            except OSError as e:
                log.warning("cannot look for orphaned spool slots: %s", e)
                continue
            for n in found:
                try:  # on the helper thread: close() waits for it before closing _adopted
                    adopted = await loop.run_in_executor(self._helper, self._claim, n)
                except SpoolBusy:
                    continue  # claimed by its new owner or another adopter meanwhile
                except OSError as e:
                    log.warning("cannot adopt spool slot %d: %s", n, e)
                    continue
                log.info("adopting spool slot %d (%d undelivered events)",
                         n, adopted.pending_events)
                self.metrics.slots_adopted += 1
                await self._drain(adopted)
                self._adopted = None
                await loop.run_in_executor(self._helper, adopted.close)

    def _claim(self, n: int) -> Spool:
        self._adopted = Spool(self.spool.root, slot=n, max_bytes=self.spool.max_bytes,
                              fsync=self.spool.fsync)
        return self._adopted

    async def _drain(self, spool: Spool) -> None:
        """Ship everything in an adopted slot, retrying (with backoff) until it is in."""
        cursor, failures = spool.acked, 0
        while spool.pending_events:
            try:
                batch = await self._next_batch(cursor, spool)
                if batch is None:
                    return
                await self._send(batch, spool)
                cursor, failures = batch.end, 0
            except Exception as e:
                failures += 1
                await self._backoff(failures, e)

    async def _insert(self, table: str, rows: list[Row], base: str, data: bytes | None = None,
                      token: str | None = None, rejected: set[str] | None = None) -> None:
        """Insert `rows` (`data`: their RowBinary, `token`: its deduplication token, else
        made from `base`). A rejected insert is bisected; the halves' bases extend it.
        `rejected` collects the event ids of rows dead-lettered on the way."""
        if data is None:
            loop = asyncio.get_running_loop()
            good, data = await loop.run_in_executor(self._helper, self.builder.encode,
                                                    table, rows)
            rows[:] = good
        if not rows:
            return
        assert data is not None
        if token is None:
            token = dedup_token(base, data)
        names = [c for c, _ in self.columns[table]]
        started = time.perf_counter()
        try:
            await self.sink.insert_rowbinary(table, names, data, dedup_token=token)
        except ValueError as e:  # rejected: isolate the bad rows
            if len(rows) == 1:
                self._dead_letter([(table, rows[0], f"{type(e).__name__}: {e}")])
                if rejected is not None:
                    rejected.add(str(rows[0].get("event_id")))
                return
            self.metrics.batches_failed += 1
            half = len(rows) // 2
            await self._insert(table, rows[:half], base + ".0", rejected=rejected)
            await self._insert(table, rows[half:], base + ".1", rejected=rejected)
            return
        took = time.perf_counter() - started
        m = self.metrics
        m.insert_seconds_total += took
        m.insert_seconds_last = took
        m.insert_seconds_max = max(m.insert_seconds_max, took)

    def _dead_letter(self, items: list[Item]) -> None:
        self.metrics.dead_lettered += self.dead_letter.write(items)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _epoch_ms(events: list[Row]) -> list[int]:
    """The timestamps of `events` that are epoch ms (as the gateway writes them); other
    forms are left out of the after-crash check."""
    return [int(t) for e in events
            if isinstance(t := e.get("timestamp"), (int, float)) and not isinstance(t, bool)]
