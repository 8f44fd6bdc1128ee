"""Gateway overhead, measured side by side in one run.

    .venv/bin/python bench/load/run.py [--seconds 10] [--rate 1000]

Layout (2 cores): the gateway (1 worker) pinned to core 0; the mock upstream and the load
generator (`hey`) on core 1. Scenarios, each also run directly against the mock upstream:
- fixed rate (open loop, `hey -q`): p50/p99 latency; the gateway's added latency is the
  difference to the direct run;
- saturation (closed loop): requests/s and the gateway's CPU time per request (from
  /proc, all of its processes);
- cache hits vs the ceiling: a minimal granian app returning a fixed body;
- streaming: SSE through the gateway vs direct;
- issue 2's yardstick: a featureless granian + aiohttp pass-through, for plain requests and
  for streams, on the gateway's core;
- the gateway's transport without its features (`lean_passthrough.py`: granian RSGI and
  the lean client), plain and streaming: the gateway minus it is what the features cost.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from watchllm.testing.servers import Server, free_port, start, start_gateway  # noqa: E402

CLK = os.sysconf("SC_CLK_TCK")
LEAN = "the gateway's transport alone (lean pass-through, no features), saturation"
LEAN_STREAM = "the gateway's transport alone (lean pass-through, no features), streaming, " \
    "saturation"
YARD_BEFORE = "granian + aiohttp pass-through (no features), saturation, just before the " \
    "gateway's streams"
YARD_AFTER = "granian + aiohttp pass-through (no features), saturation, just after them"
BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello"}]}


@contextlib.contextmanager
def services_on(cpu: int) -> Iterator[None]:
    """Run the local Redis and PostgreSQL servers on `cpu` (the load generator's core)
    for the duration, as if they were the other machines they are in production: left
    on the gateway's core, a Redis woken by each limits call preempts the gateway there.
    Their affinity is restored afterwards; where it cannot be changed (not our
    processes), they stay as they are and this says so."""
    saved: dict[int, set[int]] = {}
    if shutil.which("pgrep") is None:
        print("note: no pgrep: Redis and PostgreSQL stay where the scheduler puts them")
        found = []
    else:
        found = subprocess.run(["pgrep", "-x", "redis-server|postgres"], capture_output=True,
                               text=True).stdout.split()
    for pid in found:
        for task in Path(f"/proc/{pid}/task").glob("*"):  # every thread: Redis has several
            tid = int(task.name)
            try:
                saved[tid] = os.sched_getaffinity(tid)
                os.sched_setaffinity(tid, {cpu})
            except OSError as exc:
                saved.pop(tid, None)
                print(f"note: could not move thread {tid} of pid {pid} to cpu {cpu}: {exc}")
    try:
        yield
    finally:
        for tid, cpus in saved.items():
            with contextlib.suppress(OSError):
                os.sched_setaffinity(tid, cpus)


def _cpu_seconds(pid: int) -> float:
    """utime+stime of a process and all its descendants."""
    total = 0.0
    pids = [pid]
    while pids:
        p = pids.pop()
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / CLK
            children = Path(f"/proc/{p}/task/{p}/children").read_text().split()
            pids += [int(c) for c in children]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def hey(url: str, seconds: int, body: Path | None, headers: dict[str, str],
        rate: int | None = None, conc: int = 50) -> dict[str, float]:
    cmd = ["taskset", "-c", "1", "hey", "-z", f"{seconds}s", "-c", str(conc)]
    if rate:
        cmd += ["-q", str(rate / conc)]
    if body is not None:
        cmd += ["-m", "POST", "-T", "application/json", "-D", str(body)]
    for k, v in headers.items():
        cmd += ["-H", f"{k}: {v}"]
    out = subprocess.run([*cmd, url], capture_output=True, text=True, check=True).stdout
    res = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))}  # type: ignore[union-attr]
    for pct in ("50", "90", "99"):
        m = re.search(rf"{pct}% in ([\d.]+) secs", out)
        res[f"p{pct}_ms"] = float(m.group(1)) * 1000 if m else float("nan")
    codes = dict(re.findall(r"\[(\d+)\]\s+(\d+) responses", out))
    res["non200"] = sum(int(n) for c, n in codes.items() if c != "200")
    res["n"] = sum(int(n) for n in codes.values())
    return res


OHA = shutil.which("oha") or str(Path.home() / ".cargo/bin/oha")


def fixed_rate(url: str, seconds: int, body: Path | None, headers: dict[str, str],
               rate: int, conc: int = 50) -> dict[str, float]:
    """Open loop at `rate` requests/s. With oha (`cargo install oha`): one global schedule
    and latency measured from each request's scheduled start (--latency-correction), so a
    stall is not hidden. `hey -q` paces each of its connections separately, so all of them
    fire together every conc/rate seconds: bursts of `conc` requests, whose queueing shows up
    as latency on any server (the direct mock included). Without oha, hey it is."""
    if not Path(OHA).exists():
        return hey(url, seconds, body, headers, rate, conc)
    cmd = ["taskset", "-c", "1", OHA, "-z", f"{seconds}s", "-c", str(conc), "-q", str(rate),
           "--latency-correction", "--no-tui", "--output-format", "json"]
    if body is not None:
        cmd += ["-m", "POST", "-T", "application/json", "-D", str(body)]
    for k, v in headers.items():
        cmd += ["-H", f"{k}: {v}"]
    out = json.loads(subprocess.run([*cmd, url], capture_output=True, text=True,
                                    check=True).stdout)
    lat = out["latencyPercentiles"]
    codes = {str(k): int(v) for k, v in out["statusCodeDistribution"].items()}
    return {"rps": float(out["summary"]["requestsPerSec"]),
            "p50_ms": (lat.get("p50") or float("nan")) * 1000,
            "p90_ms": (lat.get("p90") or float("nan")) * 1000,
            "p99_ms": (lat.get("p99") or float("nan")) * 1000,
            "p99.9_ms": (lat.get("p99.9") or float("nan")) * 1000,
            "max_ms": (out["summary"].get("slowest") or float("nan")) * 1000,
            "non200": sum(n for c, n in codes.items() if c != "200")
            # requests still in flight when the run's time is up are not failures
            + sum(int(v) for k, v in out.get("errorDistribution", {}).items()
                  if "deadline" not in k),
            "n": sum(codes.values())}


# Gateways whose event backlog must be shipped before a row starts (see `measured`).
GATEWAYS: list[Server] = []


def measured(server: Server | None, fn: Any) -> dict[str, float]:
    """Run one row. Every registered gateway first ships its event backlog (the embedded
    engine inserting the last row's events would share core 0 with this row); a
    registered gateway's CPU is counted until this row's own events are shipped too, so
    the embedded engine's work for them is part of its CPU per request."""
    for gateway in GATEWAYS:
        drained(gateway)
    before = _cpu_seconds(server.proc.pid) if server else 0.0
    res = fn()
    if server:
        if server in GATEWAYS:
            drained(server)
        res["cpu_ms_per_req"] = (_cpu_seconds(server.proc.pid) - before) * 1000 / max(res["n"], 1)
    return res


def sample_overhead(url: str, headers: dict[str, str], seconds: float,
                    out: list[float]) -> threading.Thread:
    """Alongside a load run: ~25 requests/s, each recording the gateway's own time
    (x-watchllm-latency-ms minus x-watchllm-upstream-ms), which excludes the upstream and
    the client's scheduling, unlike the difference of two client-side latencies."""
    body = json.dumps(BODY).encode()

    def run() -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            req = urllib.request.Request(url, body, {**headers, "content-type":
                                                     "application/json"}, method="POST")
            with urllib.request.urlopen(req) as r:
                out.append(float(r.headers["x-watchllm-latency-ms"])
                           - float(r.headers["x-watchllm-upstream-ms"]))
            time.sleep(0.04)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def drained(server: Server, limit_s: float = 120.0) -> Server:
    """Wait until the gateway's event pipeline has shipped its backlog, so each row starts
    from the steady state (a saturation row leaves tens of thousands of events to insert,
    and the embedded ClickHouse engine inserting them shares the gateway's core)."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        with urllib.request.urlopen(server.url + "/metrics") as r:
            text = r.read().decode()
        m = re.search(r'^watchllm_queue_depth\{queue="events"\} ([\d.e+]+)$', text, re.M)
        if m is None or float(m.group(1)) == 0:
            return server
        time.sleep(0.5)
    return server


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def make_key(gw: Server, admin: str) -> str:
    def post(path: str, data: dict[str, Any]) -> dict[str, Any]:
        req = urllib.request.Request(gw.url + path, json.dumps(data).encode(), method="POST",
                                     headers={"authorization": f"Bearer {admin}",
                                              "content-type": "application/json"})
        with urllib.request.urlopen(req) as r:
            return dict(json.load(r))
    project = post("/v1/admin/projects", {"name": f"bench{time.time_ns()}"})
    return str(post("/v1/admin/keys", {"project_id": project["id"]})["key"])


def row(name: str, r: dict[str, float]) -> str:
    cpu = f"{r['cpu_ms_per_req']:.3f}" if "cpu_ms_per_req" in r else "-"
    return (f"| {name} | {r['rps']:,.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {cpu} | "
            f"{int(r['non200'])} |")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seconds", type=int, default=10)
    p.add_argument("--rate", type=int, default=1000)
    p.add_argument("--events", choices=("chdb", "http"), default="chdb",
                   help="where the gateway's events go: the embedded default (the ClickHouse "
                   "engine inside the gateway process, on its core) or a ClickHouse HTTP "
                   "endpoint (a stand-in on core 1 that accepts the inserts), as self-hosted")
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="watchllm-bench-"))
    body = tmp / "body.json"
    body.write_text(json.dumps(BODY))
    stream_body = tmp / "stream.json"
    stream_body.write_text(json.dumps({**BODY, "stream": True}))

    mock_port = free_port()
    # The streaming rows use it too: it streams precomputed events (the scripted mock, on
    # core 1 with hey, tops out below the gateway's rate: they would not be saturation rows).
    mock = start(["-m", "watchllm.testing.mock_upstream", "--port", str(mock_port), "--fixed"],
                 {}, mock_port, tmp / "mock.log", "/_mock/stats", cpu=1)
    ceiling_port = free_port()
    ceiling = start(["bench/load/ceiling.py", str(ceiling_port)], {}, ceiling_port,
                    tmp / "ceiling.log", "/", cpu=0)
    batch_port = free_port()  # the same ceiling under the gateway's SCHED_BATCH
    ceiling_batch = start(["bench/load/ceiling.py", str(batch_port), "--sched-batch"], {},
                          batch_port, tmp / "ceiling-batch.log", "/", cpu=0)
    reference_port = free_port()  # issue 2's yardstick: featureless granian + aiohttp
    reference = start(["bench/load/aiohttp_passthrough.py", str(reference_port), mock.url],
                      {}, reference_port, tmp / "reference.log", "/_mock/stats", cpu=0)
    reference_stream_port = free_port()  # the same yardstick, streaming
    reference_stream = start(["bench/load/aiohttp_passthrough.py", str(reference_stream_port),
                              mock.url], {}, reference_stream_port,
                             tmp / "reference-stream.log", "/_mock/stats", cpu=0)
    lean_port = free_port()  # the gateway's transport, no features (SCHED_BATCH as it runs)
    lean = start(["bench/load/lean_passthrough.py", str(lean_port), mock.url, "--sched-batch"],
                 {}, lean_port, tmp / "lean.log", "/_mock/stats", cpu=0)
    lean_stream_port = free_port()
    lean_stream = start(["bench/load/lean_passthrough.py", str(lean_stream_port),
                         mock.url, "--sched-batch"], {}, lean_stream_port,
                        tmp / "lean-stream.log", "/_mock/stats", cpu=0)
    admin = "bench-admin"
    env = {"OPENAI_BASE_URL": f"{mock.url}/v1", "OPENAI_API_KEY": "sk-bench",
           "WATCHLLM_ADMIN_KEY": admin, "WATCHLLM_LOG_LEVEL": "warning"}
    servers = [mock, ceiling, ceiling_batch, reference, reference_stream, lean,
               lean_stream]
    if args.events == "http":
        ch_port = free_port()
        servers.append(start([str(ROOT / "bench" / "micro" / "fake_clickhouse.py"), str(ch_port),
                              "--idle"],
                             {}, ch_port, tmp / "clickhouse.log", "/ping", cpu=1))
        env["WATCHLLM_CLICKHOUSE_URL"] = f"http://127.0.0.1:{ch_port}"
    gw = start_gateway(tmp / "gw", env, cpu=0)
    gw_stream = start_gateway(tmp / "gws", env, cpu=0)
    GATEWAYS.extend((gw, gw_stream))
    try:
        key = make_key(gw, admin)
        skey = make_key(gw_stream, admin)
        auth = {"authorization": f"Bearer {key}"}
        nocache = {**auth, "x-watchllm-cache-mode": "off"}
        s = args.seconds
        url, direct = f"{gw.url}/v1/chat/completions", f"{mock.url}/v1/chat/completions"

        def yardstick() -> dict[str, float]:  # issue 2's scale, at saturation
            return hey(f"{reference.url}/v1/chat/completions", s, body, {})

        hey(url, 2, body, nocache)  # warm-up
        hey(url, 2, body, auth)
        own: list[float] = []
        sampler = sample_overhead(url, nocache, s - 1, own)
        fixed = measured(gw, lambda: fixed_rate(url, s, body, nocache, args.rate))
        sampler.join()
        results = {
            "direct, fixed rate": measured(None, lambda: fixed_rate(direct, s, body, {},
                                                                    args.rate)),
            "gateway, fixed rate": fixed,
            "direct, saturation": measured(None, lambda: hey(direct, s, body, {})),
            "gateway, saturation": measured(gw, lambda: hey(url, s, body, nocache)),
            "granian + aiohttp pass-through (no features), saturation":
                measured(reference, yardstick),
            LEAN: measured(lean, lambda: hey(f"{lean.url}/v1/chat/completions", s, body, {})),
            "ceiling app, saturation": measured(ceiling, lambda: hey(ceiling.url, s, None, {})),
            "ceiling app (SCHED_BATCH), saturation": measured(
                ceiling_batch, lambda: hey(ceiling_batch.url, s, None, {})),
            "gateway cache hit, saturation": measured(gw,
                                                      lambda: hey(url, s, body, auth)),
            "gateway cache hit, 5000 rps": measured(gw, lambda: fixed_rate(
                url, s, body, auth, 5000)),
            # What the stack itself costs and adds at that rate, for the hit row above.
            "ceiling app, 5000 rps": measured(ceiling, lambda: fixed_rate(
                ceiling.url, s, None, {}, 5000)),
        }
        sauth = {"authorization": f"Bearer {skey}", "x-watchllm-cache-mode": "off"}
        surl = f"{gw_stream.url}/v1/chat/completions"
        hey(surl, 2, stream_body, sauth)
        # CPU here is the streaming mock's own (a granian ASGI app writing the 9 events):
        # what producing the stream costs the stack we run on, for scale.
        results["direct, streaming, saturation (CPU: the mock's)"] = measured(
            mock, lambda: hey(direct, s, stream_body, {}))
        # The yardstick again, right before and right after the gateway's streams: the
        # first one was timed minutes earlier, and this VM's speed moves by more than
        # the margin in minutes (sessions 19-20). The stream's share is of their mean.
        results[YARD_BEFORE] = measured(reference, yardstick)
        results["gateway, streaming, saturation"] = measured(
            gw_stream, lambda: hey(surl, s, stream_body, sauth))
        results[YARD_AFTER] = measured(reference, yardstick)
        results["granian + aiohttp pass-through (no features), streaming, saturation"] = \
            measured(reference_stream, lambda: hey(f"{reference_stream.url}/v1/chat/completions",
                                                   s, stream_body, {}))
        results[LEAN_STREAM] = measured(lean_stream, lambda: hey(
            f"{lean_stream.url}/v1/chat/completions", s, stream_body, {}))
    finally:
        for server in (gw, gw_stream, *servers):
            server.stop()

    tool = "oha" if Path(OHA).exists() else "hey"
    print(f"\n`{' '.join(sys.argv)}` — {time.strftime('%Y-%m-%d %H:%M')}, {s}s per row; "
          f"fixed-rate rows: {tool} (open loop), saturation rows: hey -c 50; events: "
          f"{args.events}\n")
    print("| scenario | requests/s | p50 ms | p99 ms | gateway CPU ms/req | non-200 |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, r in results.items():
        print(row(name, r))
    fr_d, fr_g = results["direct, fixed rate"], results["gateway, fixed rate"]
    sat_g = results["gateway, saturation"]
    hit, ceil = results["gateway cache hit, saturation"], results["ceiling app, saturation"]
    print(f"\nadded latency at {args.rate} rps: p50 {fr_g['p50_ms'] - fr_d['p50_ms']:+.2f} ms, "
          f"p99 {fr_g['p99_ms'] - fr_d['p99_ms']:+.2f} ms")
    print(f"gateway's own time per request at {args.rate} rps (latency minus upstream wait, "
          f"{len(own)} samples): p50 {pct(own, 0.5):.2f} ms, p99 {pct(own, 0.99):.2f} ms")
    ref = results["granian + aiohttp pass-through (no features), saturation"]
    stream_g = results["gateway, streaming, saturation"]
    ref_s = results["granian + aiohttp pass-through (no features), streaming, saturation"]
    beside = (results[YARD_BEFORE]["cpu_ms_per_req"] + results[YARD_AFTER]["cpu_ms_per_req"]) / 2
    print(f"passthrough: {sat_g['rps']:,.0f} req/s, {sat_g['cpu_ms_per_req']:.3f} ms CPU/req "
          f"= {sat_g['cpu_ms_per_req'] / ref['cpu_ms_per_req']:.0%} of the featureless "
          f"granian + aiohttp pass-through's {ref['cpu_ms_per_req']:.3f} (issue 2: 0.2 vs "
          f"0.22 ms, 91%); streaming {stream_g['cpu_ms_per_req']:.3f} ms = "
          f"{stream_g['cpu_ms_per_req'] / beside:.0%} of it timed beside the streams "
          f"({beside:.3f}, {stream_g['cpu_ms_per_req'] / ref['cpu_ms_per_req']:.0%} of the "
          f"first), and {stream_g['cpu_ms_per_req'] / ref_s['cpu_ms_per_req']:.0%} of the "
          f"same pass-through streaming ({ref_s['cpu_ms_per_req']:.3f})")
    lean_p, lean_s = results[LEAN], results[LEAN_STREAM]
    print(f"the gateway's transport alone (no features): plain {lean_p['cpu_ms_per_req']:.3f} "
          f"ms = {lean_p['cpu_ms_per_req'] / ref['cpu_ms_per_req']:.0%} of the featureless "
          f"pass-through, streaming {lean_s['cpu_ms_per_req']:.3f} ms = "
          f"{lean_s['cpu_ms_per_req'] / ref['cpu_ms_per_req']:.0%}; the features: plain "
          f"+{sat_g['cpu_ms_per_req'] - lean_p['cpu_ms_per_req']:.3f} ms, streaming "
          f"+{stream_g['cpu_ms_per_req'] - lean_s['cpu_ms_per_req']:.3f} ms")
    ceil_b = results["ceiling app (SCHED_BATCH), saturation"]
    print(f"cache hit: {hit['rps']:,.0f} req/s = {hit['rps'] / ceil['rps']:.0%} of the ceiling "
          f"app's {ceil['rps']:,.0f}, {hit['rps'] / ceil_b['rps']:.0%} of the same app under "
          f"SCHED_BATCH ({ceil_b['rps']:,.0f}); p99 at 5000 rps: "
          f"{results['gateway cache hit, 5000 rps']['p99_ms']:.2f} ms")


if __name__ == "__main__":
    main()
