"""From spooled events to insertable batches (the shipper's helper thread runs this).

A `Batch` is the events of the spool records [start, end): routed to their tables
(`rows.route`), completed (`rows.EventRows`), RowBinary-encoded per table, rows the
encoder rejects taken out for the dead-letter file. `HotRecords` keeps just-spooled
records in memory (bounded) so that a shipper keeping up never reads them back from disk.

Each table's insert carries `Batch.token(table)`: the slot's id, the batch's spool
position and size, and a checksum of the data. A batch re-sent after a crash (the spool
replays exactly the batch in flight) repeats its token and ClickHouse drops it, in the
tables and in the materialized views; a token never names other data.
"""

from __future__ import annotations

import datetime as dt
import os
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from typing import Any

import orjson

from watchllm import core
from watchllm.events.deadletter import Item
from watchllm.events.rows import EventRows, route
from watchllm.events.spool import Position, Record

Row = dict[str, Any]
Columns = list[tuple[str, str]]

ENCODE_CHUNK = 250  # rows per encoder call (bounds how long it holds the GIL)

# Batches are built and encoded on a helper thread that shares its core with request
# handling. A request thread that wants the GIL would wait a whole switch interval (5 ms),
# and under SCHED_BATCH (scheduling.py) a woken one waits for the running
# thread's time slice. So every ENCODE_CHUNK rows the helper steps aside: sched_yield
# releases the GIL and lets a runnable request thread go first (p99 in performance.md).
_step_aside: Callable[[], None] = getattr(os, "sched_yield", lambda: None)


def _json_default(value: Any) -> Any:
    if isinstance(value, dt.datetime):  # DateTime64(3) as epoch milliseconds
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return int(value.timestamp() * 1000)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def dumps(event: Any) -> bytes:
    """An event as spooled JSON (datetimes as epoch milliseconds)."""
    return orjson.dumps(event, default=_json_default, option=orjson.OPT_PASSTHROUGH_DATETIME)


def dedup_token(base: str, data: bytes) -> str:
    """`base` names the rows' place (slot, spool position, table, bisection path); the
    checksum makes sure that equal tokens mean equal data."""
    return f"{base}:{len(data)}:{core.crc32(data):08x}"


@dataclass(slots=True)
class Batch:
    start: Position
    end: Position  # spool position to ack once every table has the rows
    count: int  # events in the spool records (dead-lettered ones included)
    events: int
    slot: str  # Spool.slot_id
    tables: dict[str, list[Row]] = field(default_factory=dict)
    encoded: dict[str, bytes] = field(default_factory=dict)  # RowBinary of tables[t]
    tokens: dict[str, str] = field(default_factory=dict)  # dedup token of encoded[t]
    # A crash replay's `events` rows, kept (over retries) for the check after it, and the
    # event ids ClickHouse rejected (dead-lettered, not lost).
    replay_rows: list[Row] | None = None
    rejected: set[str] = field(default_factory=set)

    def base(self, table: str) -> str:
        return f"wl1:{self.slot}:{self.start[0]}.{self.start[1]}+{self.count}:{table}"


class HotRecords:
    """Just-spooled records still in memory: (position before, after, events, bytes)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._items: deque[tuple[Position, Position, list[Row], int]] = deque()
        self._bytes = 0
        self._lock = threading.Lock()

    def keep(self, prev: Position, end: Position, items: list[Row], size: int) -> None:
        with self._lock:
            if items and self._bytes + size <= self.max_bytes:
                self._items.append((prev, end, items, size))
                self._bytes += size

    def take(self, cursor: Position, limit: int) -> tuple[list[Row], Position, int] | None:
        """Events of the records right after `cursor` (at most `limit`, at least one
        record), if they are still in memory."""
        with self._lock:
            while self._items and self._items[0][1] <= cursor:
                self._bytes -= self._items.popleft()[3]
            events: list[Row] = []
            pos, count = cursor, 0
            while (self._items and self._items[0][0] == pos
                   and (not count or count + len(self._items[0][2]) <= limit)):
                _, pos, items, size = self._items.popleft()
                self._bytes -= size
                events += items
                count += len(items)
        return (events, pos, count) if count else None


class BatchBuilder:
    def __init__(self, columns: dict[str, Columns], route: Callable[[Row], Sequence[str]],
                 dead_letter: Callable[[list[Item]], None]) -> None:
        self.columns = columns
        self.route = route
        self.dead_letter = dead_letter
        self.rows = EventRows.of(tuple(columns.get("events", ())),
                                 dumps=lambda v: dumps(v).decode())

    def build(self, slot: str, start: Position, end: Position, count: int,
              events: list[Row]) -> Batch:
        batch = Batch(start, end, count, len(events), slot)
        if self._all_requests(events):
            # The common batch: the gateway's own events, each a request's prompt_call,
            # which complete() leaves as they are and route() sends to `events` alone;
            # ~1 µs an event less than the loop below.
            batch.tables["events"] = list(events)
        else:
            for i, ev in enumerate(events):
                if i % ENCODE_CHUNK == 0:
                    _step_aside()
                if not isinstance(ev, dict):
                    self.dead_letter([(None, ev, "an event must be a JSON object")])
                    batch.events -= 1  # as decode() leaves it out of a batch read from disk
                    continue
                self.rows.complete(ev)
                for table in self.route(ev):
                    batch.tables.setdefault(table, []).append(ev)
        for table, rows in batch.tables.items():
            if table not in self.columns:
                self.dead_letter([(table, r, f"no table {table!r} in the schema") for r in rows])
                rows.clear()
                continue
            good, data = self.encode(table, rows)
            rows[:] = good  # a retry of this batch does not dead-letter these rows twice
            batch.encoded[table] = data
            batch.tokens[table] = dedup_token(batch.base(table), data)
        return batch

    def _all_requests(self, events: list[Row]) -> bool:
        """Whether every event is a prompt_call dict and routing is the default's (one
        C-level pass over the batch)."""
        if self.route is not route:
            return False
        try:
            kinds = list(map(dict.get, events, repeat("event_type")))
        except TypeError:  # not a dict
            return False
        return kinds.count("prompt_call") == len(kinds)

    def decode(self, records: list[Record]) -> list[Row]:
        events: list[Row] = []
        for rec in records:
            _step_aside()
            if rec.array:
                events += self._decode_array(rec)
                continue
            for line in rec.payload.split(b"\n"):
                try:
                    ev = orjson.loads(line)
                except orjson.JSONDecodeError as e:
                    self.dead_letter([(None, line.decode(errors="replace"), f"bad JSON: {e}")])
                    continue
                if isinstance(ev, dict):
                    events.append(ev)
                else:
                    self.dead_letter([(None, ev, "an event must be a JSON object")])
        return events

    def _decode_array(self, rec: Record) -> list[Row]:
        """The events of an array record. The writer made it with one encoder call from
        dicts and the checksum matched, so anything else is set aside whole."""
        try:
            events = orjson.loads(rec.payload)
        except orjson.JSONDecodeError as e:
            self.dead_letter([(None, rec.payload.decode(errors="replace"), f"bad JSON: {e}")])
            return []
        if not isinstance(events, list):
            self.dead_letter([(None, events, "an array record must hold a JSON array")])
            return []
        good = [ev for ev in events if isinstance(ev, dict)]
        if len(good) < len(events):
            self.dead_letter([(None, ev, "an event must be a JSON object")
                              for ev in events if not isinstance(ev, dict)])
        return good

    def encode(self, table: str, rows: list[Row]) -> tuple[list[Row], bytes]:
        """RowBinary of `rows`; rows the encoder rejects are dead-lettered and left out.

        Encoded ENCODE_CHUNK rows per call: the encoder holds the GIL while it reads the
        row dicts, and between calls the event loop gets its turn, so a 20,000-event batch
        never stalls request handling for the whole batch. (RowBinary has no header: the
        chunks concatenate to exactly the bytes of one call.)
        """
        columns = self.columns[table]
        parts: list[bytes] = []
        start = 0
        while start < len(rows):
            _step_aside()
            chunk = rows[start : start + ENCODE_CHUNK]
            try:
                parts.append(core.encode_rowbinary(columns, chunk))
            except core.RowBinaryError as e:
                bad = getattr(e, "row", None)
                if not isinstance(bad, int) or not 0 <= bad < len(chunk):
                    raise
                self.dead_letter([(table, chunk[bad], str(e))])
                rows = rows[: start + bad] + rows[start + bad + 1 :]
                continue  # re-encode this chunk without it
            start += ENCODE_CHUNK
        return rows, b"".join(parts)
