"""A write-ahead spool: events wait on local disk until ClickHouse has accepted them.

Layout: ``<dir>/slot-<n>/`` is owned by one process at a time (an exclusive ``flock`` on
``slot-<n>/lock``, released by the kernel even on ``kill -9``), so several workers can
share one spool directory. A slot holds numbered segment files and one ``ack`` file::

    seg-0000000000000007.wal   records, appended only
    ack                         (segment, offset) up to which ClickHouse has the data

A record is one group commit of the writer (many events)::

    magic | payload length u32 | event count u32 | crc32 u32 | payload
    b"WLS2": payload = one JSON array of the events (the writer's one encoder call)
    b"WLS1": payload = event JSON documents joined by b"\\n" (JSON never contains a raw
             newline): every record written before array records existed; still read

The crc covers length, count and payload, so a torn tail write or a flipped bit is
detected; the reader then skips forward to the next valid record (or segment) and counts
the bytes it lost in ``corrupt_bytes``. After a restart the writer always starts a new
segment, so it never appends behind a torn tail.

Durability: every append is written with one ``writev()`` before it is published, so a
crashed or killed process loses nothing the spool returned a position for. ``fsync``
(against power loss) follows the policy: ``always`` (every group commit), ``interval``
(at most ``fsync_interval_s`` of data at risk) or ``never``.

Delivery: ``ack(position)`` records how far the consumer got; segments wholly before it
are deleted. A crash between an insert and its ack re-delivers that batch once more
(at-least-once). So that the re-delivery is the *same* batch (and its deduplication
token matches, see pipeline.py), the consumer records the batch it is about to send with
``begin(start, events)`` in ``inflight``; after a restart ``replay`` returns it while the
ack still points at its start. ``slot_id`` (file ``id``, random, made once per slot)
keeps tokens of different slots, hosts or wiped spools apart.

Orphans: a slot whose owner is gone (the next start had fewer workers) keeps its events
until someone claims it. `orphan_slots` lists slots that hold undelivered data and whose
lock is free (a cheap look at the files, no lock taken); `Spool(dir, slot=n)` claims
exactly slot n (`SpoolBusy` if a live process holds it), so a running pipeline can adopt
it, drain it with the slot's own id and replay record, and close it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import struct
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from watchllm import core

MAGIC = b"WLS1"  # JSON lines
MAGIC_ARRAY = b"WLS2"  # one JSON array
_MAGICS = (MAGIC, MAGIC_ARRAY)
_MAGIC_PREFIX = b"WLS"
HEADER = struct.Struct("<4sIII")  # magic, payload length, event count, crc32
ACK = struct.Struct("<QQI")  # segment, offset, crc32 of the first 16 bytes
INFLIGHT = struct.Struct("<QQQI")  # segment, offset, events, crc32 of the first 24 bytes
MAX_PAYLOAD = 256 << 20
FsyncPolicy = Literal["always", "interval", "never"]
Position = tuple[int, int]  # (segment id, byte offset): ordered like the data


class SpoolError(OSError):
    """The spool directory cannot be used (no free slot, unwritable disk)."""


class SpoolBusy(SpoolError):
    """The slot asked for is held by a live process."""


@dataclass(slots=True)
class Record:
    payload: bytes
    count: int
    array: bool = False  # a JSON array (b"WLS2"), else JSON lines


def _crc(length: int, count: int, payload: bytes) -> int:
    return core.crc32(payload, core.crc32(struct.pack("<II", length, count)))


def _header(magic: bytes, payload: bytes, count: int) -> bytes:
    return HEADER.pack(magic, len(payload), count, _crc(len(payload), count, payload))


def encode_record(lines: list[bytes]) -> bytes:
    payload = b"\n".join(lines)
    return _header(MAGIC, payload, len(lines)) + payload


def encode_array_record(payload: bytes, count: int) -> bytes:
    """A record of `count` events encoded as one JSON array."""
    return _header(MAGIC_ARRAY, payload, count) + payload


def parse_records(buf: bytes) -> tuple[list[tuple[int, Record]], int]:
    """Valid records in `buf` as [(offset, record)], and the offset where parsing stopped
    (the end, or fewer than a header's bytes before it). Garbage, bad checksums and
    incomplete records are skipped by resynchronising on the next magic."""
    out: list[tuple[int, Record]] = []
    pos, n = 0, len(buf)
    while pos + HEADER.size <= n:
        magic, length, count, crc = HEADER.unpack_from(buf, pos)
        end = pos + HEADER.size + length
        if magic in _MAGICS and end <= n:
            payload = buf[pos + HEADER.size : end]
            if _crc(length, count, payload) == crc:
                out.append((pos, Record(payload, count, magic == MAGIC_ARRAY)))
                pos = end
                continue
        pos = _next_magic(buf, pos + 1)
    return out, pos


def _next_magic(buf: bytes, start: int) -> int:
    """Where the next record header may start (either magic), or len(buf)."""
    while (i := buf.find(_MAGIC_PREFIX, start)) >= 0:
        if buf[i:i + 4] in _MAGICS:
            return i
        start = i + 1
    return len(buf)


def _seg_name(seg: int) -> str:
    return f"seg-{seg:016d}.wal"


def _read_position(path: Path) -> Position | None:
    try:
        raw = path.read_bytes()
        seg, off, crc = ACK.unpack(raw)
    except (OSError, struct.error):
        return None
    return (seg, off) if core.crc32(raw[:16]) == crc else None


def _has_pending(slot: Path) -> bool:
    """Whether the slot's files hold bytes after its ack (maybe only a torn tail: the
    owner's recovery tells). Reads file sizes only."""
    ack = _read_position(slot / "ack") or (0, 0)
    for path in slot.glob("seg-*.wal"):
        try:
            seg, size = int(path.name[4:-4]), path.stat().st_size
        except (ValueError, OSError):
            continue
        if (seg, size) > ack and size > (ack[1] if seg == ack[0] else 0):
            return True
    return False


def orphan_slots(root: Path | str, *, exclude: Path | None = None) -> list[int]:
    """Slots of `root` with undelivered data whose lock no live process holds (checked
    by taking and at once releasing it; a claim can still lose a race: `SpoolBusy`)."""
    found = []
    for slot in Path(root).glob("slot-*"):
        if slot == exclude or not slot.name[5:].isdigit() or not _has_pending(slot):
            continue
        try:
            fd = os.open(slot / "lock", os.O_RDWR)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            continue  # its owner is alive
        finally:
            os.close(fd)  # releases the lock if we took it
        found.append(int(slot.name[5:]))
    return sorted(found)


class Spool:
    """One slot of a spool directory: an appender (one thread) and a reader (another)."""

    def __init__(
        self,
        directory: Path | str,
        *,
        max_bytes: int = 1 << 30,
        segment_bytes: int = 16 << 20,
        fsync: FsyncPolicy = "interval",
        fsync_interval_s: float = 0.5,
        slot: int | None = None,
    ) -> None:
        self.root = Path(directory)
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.fsync = fsync
        self.fsync_interval_s = fsync_interval_s
        self.corrupt_bytes = 0
        self.pending_events = 0
        self._lock = threading.Lock()
        self._sizes: dict[int, int] = {}  # segment id -> bytes on disk
        self._ack: Position = (0, 0)
        self._committed: Position = (0, 0)
        self._fd = -1
        self._lock_fd = -1
        self._last_sync = time.monotonic()
        self._dirty = False
        self.dir = self._claim_slot(slot)
        self.slot_id = self._slot_id()
        self._recover()
        self._inflight = self._read_inflight()

    # -- opening -------------------------------------------------------------------
    def _claim_slot(self, only: int | None) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        for n in range(1024) if only is None else (only,):
            slot = self.root / f"slot-{n}"
            slot.mkdir(exist_ok=True)
            fd = os.open(slot / "lock", os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            self._lock_fd = fd
            return slot
        if only is not None:
            raise SpoolBusy(f"spool slot {only} in {self.root} is held by a live process")
        raise SpoolError(f"no free slot in spool directory {self.root}")

    def _slot_id(self) -> str:
        path = self.dir / "id"
        try:
            found = path.read_text().strip()
        except OSError:
            found = ""
        if len(found) == 16 and all(c in "0123456789abcdef" for c in found):
            return found
        made = secrets.token_hex(8)
        self._replace(path, made.encode())
        return made

    def _replace(self, path: Path, data: bytes) -> None:
        """Write a small file atomically (fsync'd under the `always` policy)."""
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as f:
            f.write(data)
            if self.fsync == "always":
                os.fsync(f.fileno())
        os.replace(tmp, path)

    def _read_inflight(self) -> tuple[Position, int] | None:
        try:
            raw = (self.dir / "inflight").read_bytes()
            seg, off, events, crc = INFLIGHT.unpack(raw)
        except (OSError, struct.error):
            return None
        return ((seg, off), events) if core.crc32(raw[:24]) == crc else None

    def _read_ack(self) -> Position | None:
        return _read_position(self.dir / "ack")

    def _recover(self) -> None:
        segs = sorted(int(p.name[4:-4]) for p in self.dir.glob("seg-*.wal"))
        ack = self._read_ack() or ((segs[0], 0) if segs else (0, 0))
        for seg in segs:
            if seg < ack[0]:
                (self.dir / _seg_name(seg)).unlink(missing_ok=True)
            else:
                self._sizes[seg] = (self.dir / _seg_name(seg)).stat().st_size
        self._ack = ack
        # Count what is still to deliver (headers only), then write to a fresh segment.
        pos: Position = ack
        while True:
            records, end = self._read_from(pos, limit_events=1 << 62, final=True)
            self.pending_events += sum(r.count for r in records)
            if end == pos:
                break
            pos = end
        last = max([*self._sizes, ack[0]], default=0)
        if not self.pending_events:  # only delivered (or unreadable) data left: drop it
            for seg in list(self._sizes):
                (self.dir / _seg_name(seg)).unlink(missing_ok=True)
            self._sizes.clear()
        self._open_segment(last + 1)
        if not self.pending_events:  # the next batch starts here, before and after a restart
            self.ack((last + 1, 0), 0)

    def _open_segment(self, seg: int) -> None:
        if self._fd >= 0:
            self._sync()
            os.close(self._fd)
        self._fd = os.open(self.dir / _seg_name(seg), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        with self._lock:
            self._sizes[seg] = 0
            self._committed = (seg, 0)
        self._fsync_dir()

    def _fsync_dir(self) -> None:
        if self.fsync != "never":
            fd = os.open(self.dir, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    # -- appending (the writer thread) --------------------------------------------
    @property
    def pending_bytes(self) -> int:
        with self._lock:
            return sum(s for seg, s in self._sizes.items() if seg >= self._ack[0]) - self._ack[1]

    def committed(self) -> Position:
        with self._lock:
            return self._committed

    def append(self, lines: list[bytes]) -> Position | None:
        """Write one record of JSON lines (the format before array records: the writer
        now appends arrays; tests make old spools with this); return the position after
        it, or None when the spool is full."""
        if not lines:
            return self.committed()
        payload = b"\n".join(lines)
        return self._append(_header(MAGIC, payload, len(lines)), payload, len(lines))

    def append_array(self, payload: bytes, count: int) -> Position | None:
        """Write one record whose payload is a JSON array of `count` events."""
        if not count:
            return self.committed()
        return self._append(_header(MAGIC_ARRAY, payload, count), payload, count)

    def _append(self, header: bytes, payload: bytes, count: int) -> Position | None:
        size_of = len(header) + len(payload)
        if self.pending_bytes + size_of > self.max_bytes:
            return None
        seg, size = self.committed()
        if size and size + size_of > self.segment_bytes:
            self._open_segment(seg + 1)
            seg, size = seg + 1, 0
        # One writev: the header and the payload are not copied into one buffer first.
        written = os.writev(self._fd, (header, payload))
        if written != size_of:  # a short write: disk full; never publish a partial record
            # ... nor leave its bytes behind: the next record must start where the spool
            # says it does (a reader of the live segment reads up to `committed` only).
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, size)
            raise SpoolError(f"short write to spool ({written} of {size_of} bytes)")
        self._dirty = True
        if self.fsync == "always":
            self._sync()
        else:
            self.sync_if_due()
        with self._lock:
            self._sizes[seg] = size + size_of
            self._committed = (seg, size + size_of)
            self.pending_events += count
            return self._committed

    def _sync(self) -> None:
        if self._dirty and self.fsync != "never" and self._fd >= 0:
            os.fsync(self._fd)
        self._dirty = False
        self._last_sync = time.monotonic()

    def sync_if_due(self) -> None:
        if self._dirty and time.monotonic() - self._last_sync >= self.fsync_interval_s:
            self._sync()

    # -- reading and acknowledging (the consumer) ----------------------------------
    def read(self, start: Position, max_events: int) -> tuple[list[Record], Position]:
        """Whole records from `start` (at least one when any is ready, until `max_events`
        is reached) and the position after the last one returned."""
        records: list[Record] = []
        pos = start
        while sum(r.count for r in records) < max_events:
            more, end = self._read_from(pos, max_events - sum(r.count for r in records))
            records += more
            if end == pos:
                break
            pos = end
        return records, pos

    def _read_from(
        self, pos: Position, limit_events: int, final: bool = False
    ) -> tuple[list[Record], Position]:
        """Records of one segment from `pos`; moves to the next segment at its end."""
        seg, off = pos
        with self._lock:
            committed = self._committed
            later = sorted(s for s in self._sizes if s > seg)
        live = not final and seg == committed[0]
        path = self.dir / _seg_name(seg)
        try:
            with open(path, "rb") as f:
                f.seek(off)
                chunk = f.read((committed[1] - off) if live else -1)
        except FileNotFoundError:
            chunk = b""
        found, end = parse_records(chunk)
        out: list[Record] = []
        used = size = 0
        for rec_off, rec in found:
            if out and used + rec.count > limit_events:
                end = rec_off
                break
            out.append(rec)
            used += rec.count
            size += HEADER.size + len(rec.payload)
        else:
            if not live:  # a finished segment: whatever follows the last record is lost
                end = len(chunk)
        if not final:
            self.corrupt_bytes += end - size
        if live or end < len(chunk) or not later:
            return out, (seg, off + end)
        return out, (later[0], 0)

    def begin(self, start: Position, events: int) -> None:
        """Record the batch [start, +events) as being sent: if this process dies before
        its ack, `replay` tells the next one to send exactly this batch again."""
        if self._inflight == (start, events):
            return
        raw = struct.pack("<QQQ", *start, events)
        self._replace(self.dir / "inflight", raw + struct.pack("<I", core.crc32(raw)))
        self._inflight = (start, events)

    @property
    def replay(self) -> tuple[Position, int] | None:
        """The batch that was being sent when the ack stopped: (start, events), while the
        ack is still at its start; None otherwise."""
        inflight = self._inflight
        return inflight if inflight is not None and inflight[0] == self.acked else None

    def ack(self, pos: Position, events: int) -> None:
        """Everything before `pos` is in ClickHouse: persist that, drop finished segments."""
        raw = struct.pack("<QQ", *pos)
        self._replace(self.dir / "ack", raw + struct.pack("<I", core.crc32(raw)))
        with self._lock:
            self._ack = pos
            self.pending_events = max(0, self.pending_events - events)
            doomed = [s for s in self._sizes if s < pos[0]]
            for s in doomed:
                del self._sizes[s]
        for s in doomed:
            (self.dir / _seg_name(s)).unlink(missing_ok=True)

    @property
    def acked(self) -> Position:
        with self._lock:
            return self._ack

    def close(self) -> None:
        if self._fd >= 0:
            self._sync()
            os.close(self._fd)
            self._fd = -1
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # releases the slot's flock
            self._lock_fd = -1
