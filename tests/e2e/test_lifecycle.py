"""Process-level behaviour: graceful drain on SIGTERM; streams without Nagle stalls; SCHED_BATCH."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
import uuid

import httpx
import pytest

from tests.e2e.conftest import gateway_env, new_key, stats
from watchllm.testing.servers import Server, start_gateway


@pytest.mark.parametrize("interface", ["rsgi", "asgi"])
def test_sigterm_drains_in_flight_requests(upstream: Server, interface: str,
                                           tmp_path_factory: pytest.TempPathFactory) -> None:
    env = gateway_env(upstream, WATCHLLM_SERVER_INTERFACE=interface)
    server = start_gateway(tmp_path_factory.mktemp("drain"), env)
    key = new_key(server, "drain")
    results: list[int] = []

    def slow_request() -> None:
        r = httpx.post(server.url + "/v1/chat/completions", timeout=30,
                       headers={"authorization": f"Bearer {key}"},
                       json={"model": "gpt-4o-mini", "mock": {"latency_ms": 1500},
                             "messages": [{"role": "user", "content": uuid.uuid4().hex}]})
        results.append(r.status_code)

    before = stats(upstream)["total"]
    worker = threading.Thread(target=slow_request)
    worker.start()
    deadline = time.monotonic() + 10
    while stats(upstream)["total"] == before and time.monotonic() < deadline:
        time.sleep(0.02)  # until the request is in flight upstream (the mock holds it 1.5 s)
    server.proc.send_signal(signal.SIGTERM)
    worker.join(10)
    assert results == [200]
    assert server.proc.wait(20) == 0


def test_small_sse_writes_are_not_delayed(gateway: Server, api_key: str,
                                          upstream: Server) -> None:
    """40 chunks 2 ms apart: Nagle + delayed ACK would add ~40 ms per stalled write."""
    body = {"model": "gpt-4o-mini", "stream": True, "mock": {"chunk_delay_ms": 2, "chunks": 40},
            "messages": [{"role": "user", "content": " ".join(["word"] * 60)}]}

    def timed(url: str, headers: dict[str, str]) -> tuple[float, float]:
        gaps = []
        start = last = time.perf_counter()
        with httpx.stream("POST", url, json=body, headers=headers, timeout=30) as r:
            for _ in r.iter_raw():
                now = time.perf_counter()
                gaps.append(now - last)
                last = now
        return last - start, max(gaps[1:] or [0])

    auth = {"authorization": f"Bearer {api_key}", "x-watchllm-cache-mode": "off"}
    via_total, via_gap = timed(gateway.url + "/v1/chat/completions", auth)
    direct_total, _ = timed(upstream.url + "/v1/chat/completions", {})
    assert via_gap < 0.03, f"a chunk waited {via_gap * 1000:.0f} ms"
    assert via_total < direct_total + 0.1


@pytest.mark.skipif(not hasattr(os, "SCHED_BATCH"), reason="Linux only")
def test_served_worker_threads_run_under_sched_batch(gateway: Server, api_key: str) -> None:
    """`watchllm serve` sets SCHED_BATCH before granian forks (scheduling.py): every
    thread of every worker has it, except the embedded ClickHouse engine's (chDB), which
    run under SCHED_IDLE so that inserts and merges yield to requests at once."""
    r = httpx.post(gateway.url + "/v1/chat/completions", timeout=30,
                   headers={"authorization": f"Bearer {api_key}"},
                   json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "t"}]})
    assert r.status_code == 200  # an event to insert: the engine's insert pools exist
    workers = subprocess.run(["pgrep", "-P", str(gateway.proc.pid)], capture_output=True,
                             text=True).stdout.split()
    assert workers
    for pid in workers:
        policies: dict[str, set[int]] = {}
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                name = "engine" if f.read().strip() in CHDB_THREADS else "other"
            policies.setdefault(name, set()).add(os.sched_getscheduler(int(tid)))
        assert os.sched_getscheduler(int(pid)) == os.SCHED_BATCH  # the app's loop thread
        assert policies["engine"] == {os.SCHED_IDLE}, policies
        # granian's and Python's: batch, but for the event shipping threads (the
        # pipeline's encoder, the ClickHouse insert and query threads).
        assert policies["other"] == {os.SCHED_BATCH, os.SCHED_IDLE}, policies
        idle = [t for t in os.listdir(f"/proc/{pid}/task")
                if os.sched_getscheduler(int(t)) == os.SCHED_IDLE]
        assert len(idle) >= 3 + 5, idle  # the three, and the engine's own


# Names the ClickHouse engine (chDB 4.x) gives the threads it starts.
CHDB_THREADS = {"BgSchPool", "BgStrmSchPool", "MergeMutate", "Fetch", "Move", "Common",
                "PoolDelayExec", "MemoryWorker", "ThreadPool", "jemalloc_bg_thd"}
