"""The write-ahead spool on its own: records, acks, recovery, torn writes, bounds, slots."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from watchllm.events.spool import (
    HEADER,
    Record,
    Spool,
    SpoolError,
    encode_array_record,
    encode_record,
    parse_records,
)


def lines(start: int, n: int) -> list[bytes]:
    return [f'{{"i":{i}}}'.encode() for i in range(start, start + n)]


def events_of(record: Record) -> list[bytes]:
    """A record's events as JSON lines, whichever kind it is (an array record's elements
    re-encoded: these are the compact documents `lines` makes)."""
    if record.array:
        return [orjson.dumps(ev) for ev in orjson.loads(record.payload)]
    return record.payload.split(b"\n")


def drain(spool: Spool, max_events: int = 1 << 30) -> tuple[list[bytes], tuple[int, int]]:
    records, end = spool.read(spool.acked, max_events)
    return [line for r in records for line in events_of(r)], end


def segments(spool: Spool) -> list[Path]:
    return sorted(spool.dir.glob("seg-*.wal"))


def test_append_read_ack(tmp_path: Path) -> None:
    s = Spool(tmp_path)
    s.append(lines(0, 3))
    s.append(lines(3, 2))
    got, end = drain(s)
    assert got == lines(0, 5)
    assert s.pending_events == 5 and s.pending_bytes > 0
    s.ack(end, 5)
    assert s.pending_events == 0 and s.pending_bytes == 0
    assert drain(s)[0] == []
    s.close()


def test_read_stops_at_whole_records_near_max_events(tmp_path: Path) -> None:
    s = Spool(tmp_path)
    for k in range(5):
        s.append(lines(k * 10, 10))
    records, end = s.read(s.acked, 25)
    assert [r.count for r in records] == [10, 10, 10]  # never splits a record
    s.ack(end, 30)
    assert drain(s)[0] == lines(30, 20)
    s.close()


def test_restart_delivers_what_was_not_acked_and_nothing_acked(tmp_path: Path) -> None:
    s = Spool(tmp_path)
    s.append(lines(0, 4))
    _, end = s.read(s.acked, 1)  # the first record: 4 events
    s.ack(end, 4)
    s.append(lines(4, 3))
    s.close()
    s = Spool(tmp_path)
    assert s.pending_events == 3
    assert drain(s)[0] == lines(4, 3)
    s.close()


def test_torn_tail_is_detected_and_skipped(tmp_path: Path) -> None:
    s = Spool(tmp_path)
    s.append(lines(0, 3))
    s.append(lines(3, 3))
    seg = segments(s)[-1]
    s.close()
    size = seg.stat().st_size
    os.truncate(seg, size - 5)  # the second record's write was cut short by a crash
    s = Spool(tmp_path)
    assert s.pending_events == 3
    s.append(lines(100, 2))  # goes to a fresh segment, never behind the torn tail
    got, end = drain(s)
    assert got == lines(0, 3) + lines(100, 2)
    assert s.corrupt_bytes == size - 5 - len(encode_record(lines(0, 3)))
    s.ack(end, 5)
    s.close()
    assert len(segments(Spool(tmp_path))) == 1  # the torn segment was deleted after the ack


def test_flipped_byte_loses_only_its_record(tmp_path: Path) -> None:
    s = Spool(tmp_path)
    for k in range(3):
        s.append(lines(k * 2, 2))
    seg = segments(s)[-1]
    s.close()
    data = bytearray(seg.read_bytes())
    middle = len(encode_record(lines(0, 2))) + HEADER.size + 2  # in record 2's payload
    data[middle] ^= 0xFF
    seg.write_bytes(bytes(data))
    s = Spool(tmp_path)
    assert drain(s)[0] == lines(0, 2) + lines(4, 2)
    s.close()


def test_bounded_bytes_refuses_instead_of_growing(tmp_path: Path) -> None:
    s = Spool(tmp_path, max_bytes=1000)
    accepted = 0
    while s.append(lines(accepted, 10)) is not None:
        accepted += 10
    assert 0 < s.pending_bytes <= 1000
    _, end = drain(s)
    s.ack(end, accepted)
    assert s.append(lines(0, 10)) is not None  # room again once delivered
    s.close()


def test_segments_roll_and_are_deleted_after_ack(tmp_path: Path) -> None:
    s = Spool(tmp_path, segment_bytes=200)
    for k in range(20):
        s.append(lines(k * 5, 5))
    assert len(segments(s)) > 3
    got, end = drain(s)
    assert got == lines(0, 100)
    s.ack(end, 100)
    assert len(segments(s)) == 1  # only the live one
    s.close()


def test_each_process_gets_its_own_slot(tmp_path: Path) -> None:
    a, b = Spool(tmp_path), Spool(tmp_path)
    assert a.dir != b.dir
    a.close()
    c = Spool(tmp_path)  # a's slot is free again (the lock went with it)
    assert c.dir == a.dir
    b.close()
    c.close()


def test_parse_records_resyncs_after_garbage() -> None:
    buf = b"garbage" + encode_record(lines(0, 2)) + b"\x00" * 3 + encode_record(lines(2, 1))
    found, end = parse_records(buf)
    assert [r.count for _, r in found] == [2, 1] and end == len(buf)


def array(start: int, n: int) -> bytes:
    return b"[" + b",".join(lines(start, n)) + b"]"


def test_array_and_line_records_are_read_alike(tmp_path: Path) -> None:
    s = Spool(tmp_path)
    s.append(lines(0, 2))
    s.append_array(array(2, 3), 3)
    assert s.pending_events == 5
    records, end = s.read(s.acked, 100)
    assert [(r.count, r.array) for r in records] == [(2, False), (3, True)]
    assert records[1].payload == array(2, 3)
    s.ack(end, 5)
    s.close()
    again = Spool(tmp_path)  # nothing is re-read after the ack
    assert again.pending_events == 0 and again.read(again.acked, 100)[0] == []
    again.close()


def test_parse_records_resyncs_on_either_magic() -> None:
    torn = encode_array_record(array(0, 4), 4)[:-3]  # a torn array record, then both kinds
    buf = (b"junk" + torn + encode_array_record(array(4, 2), 2) + b"\x01"
           + encode_record(lines(6, 1)) + encode_array_record(array(7, 3), 3))
    found, end = parse_records(buf)
    assert [(r.count, r.array) for _, r in found] == [(2, True), (1, False), (3, True)]
    assert end == len(buf)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 30), st.booleans(), st.integers(0, 40)), max_size=12))
def test_random_crashes_never_lose_or_duplicate_acked_data(
    tmp_path_factory: object, steps: list[tuple[int, bool, int]]
) -> None:
    """Append batches; sometimes 'crash' (reopen, maybe cutting the tail); deliver + ack.
    Every event not in a torn record is delivered exactly once across all restarts."""
    import tempfile

    root = Path(tempfile.mkdtemp())
    s = Spool(root, segment_bytes=300)
    written: list[bytes] = []
    torn: set[bytes] = set()
    delivered: list[bytes] = []
    n = 0
    for count, crash, cut in steps:
        batch = lines(n, count)
        n += count
        as_array = n % 2 == 0  # both kinds of record, interleaved
        if as_array:
            s.append_array(array(n - count, count), count)
        else:
            s.append(batch)
        written += batch
        if crash:
            seg = segments(s)[-1]
            s.close()
            if cut:
                size = seg.stat().st_size
                rec = len(encode_array_record(array(n - count, count), count) if as_array
                          else encode_record(batch))
                os.truncate(seg, size - min(cut, rec))
                torn.update(batch)
            s = Spool(root, segment_bytes=300)
        if count % 3 == 0:  # deliver sometimes
            got, end = drain(s)
            delivered += got
            s.ack(end, len(got))
    got, end = drain(s)
    delivered += got
    s.close()
    assert len(delivered) == len(set(delivered))
    assert set(delivered) == set(written) - torn


def test_a_short_write_leaves_nothing_behind(tmp_path: Path, monkeypatch: Any) -> None:
    """Disk full mid-record: the append fails, its partial bytes are cut off, and the next
    record starts where the spool says (a reader of the live segment reads up to there)."""
    s = Spool(tmp_path)
    s.append_array(array(0, 2), 2)
    real = os.writev

    def short(fd: int, buffers: Any) -> int:
        data = b"".join(buffers)
        return os.write(fd, data[: len(data) // 2])

    monkeypatch.setattr(os, "writev", short)
    with pytest.raises(SpoolError):
        s.append_array(array(2, 3), 3)
    monkeypatch.setattr(os, "writev", real)
    s.append(lines(5, 1))
    assert s.pending_events == 3
    got, end = drain(s)
    assert got == lines(0, 2) + lines(5, 1) and s.corrupt_bytes == 0
    s.ack(end, 3)
    s.close()
