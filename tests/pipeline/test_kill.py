"""kill -9 in the middle of a load: every event the spool had accepted before the kill is
in ClickHouse exactly once after a restart (chDB in the child's own directory), in the
raw table and in the usage_hourly materialized view."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

ROOT = Path(__file__).resolve().parents[2]


def run_child(*args: str) -> subprocess.Popen[bytes]:
    pytest.importorskip("chdb")
    return subprocess.Popen(
        [sys.executable, "-m", "tests.pipeline.producer", *args],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


@pytest.mark.parametrize("kill_after", [20_000, 60_000])
def test_sigkill_mid_load_loses_nothing_and_duplicates_nothing(
    tmp_path: Path, kill_after: int
) -> None:
    child = run_child("produce", str(tmp_path))
    assert child.stdout is not None
    durable = sent = 0
    deadline = time.monotonic() + 120
    for line in child.stdout:
        parts = line.split()
        if parts[:1] == [b"durable"]:
            durable, sent = int(parts[1]), int(parts[3])
            if durable >= kill_after and sent > 0:
                break
        assert time.monotonic() < deadline, "producer too slow"
    os.kill(child.pid, signal.SIGKILL)  # mid-load: writer, shipper and inserts all busy
    child.wait()
    assert child.returncode == -signal.SIGKILL
    assert sent < durable  # some acknowledged events were not yet in ClickHouse

    check = run_child("check", str(tmp_path), str(durable))
    out, err = check.communicate(timeout=120)
    assert check.returncode == 0, err.decode()[-2000:]
    result = orjson.loads(out.splitlines()[-1])
    assert result["recovered"] > 0  # the restart found undelivered events in the spool
    assert result["acked"] == durable  # every acknowledged event is there...
    assert result["n"] == result["u"]  # ...exactly once (FINAL collapses redeliveries)
    assert result["n"] >= durable
    # The re-sent batch repeated its deduplication token: dropped before any merge, in
    # the table and in the materialized view (which FINAL cannot fix).
    assert result["raw"] == result["view"] == result["u"]
