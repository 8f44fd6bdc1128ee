"""Where a served request's CPU goes, by thread, shared object and symbol: `perf record`
(the cpu-clock software event; this VM has no hardware counters) of the server's
processes while `hey -c 50` drives it, printed as CPU µs per request.

    .venv/bin/python bench/profile/perf_server.py [hit|passthrough|stream|ceiling|floor]
        [--seconds 8] [--events off|chdb] [--top 40] [--env JSON]

The gateway runs as in bench/load/ab.py (one worker on core 0, the mock upstream and hey
on core 1). Python frames show as libpython's interpreter symbols: this splits the
request between the interpreter, granian (Rust), our `_core`, chDB, libc and the kernel,
which in-process profiles (bench/profile/rsgi_hit.py) cannot see. By thread ("pid" is
perf's name for it: tid:comm): the event loop, granian's I/O thread, the event writer,
the helper and chDB's threads. Sampling costs the server ~20%: compare rows of one run,
not against bench/load numbers.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "load"))

from run import BODY, ROOT, hey, make_key

from watchllm.testing.servers import free_port, start, start_gateway, start_mock_upstream

HZ = 4999  # samples per second of CPU


def _tree(root: int) -> list[int]:
    """`root` and its descendants (granian's workers are child processes)."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += parents.get(pid, [])
    return found


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("kind", nargs="?", default="hit",
                   choices=["hit", "passthrough", "stream", "ceiling", "floor"])
    p.add_argument("--seconds", type=int, default=8)
    p.add_argument("--events", choices=["off", "chdb"], default="chdb")
    p.add_argument("--top", type=int, default=40)
    p.add_argument("--env", default="{}", help="JSON: more environment for the gateway "
                   "(e.g. self-hosted mode, limits)")
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="watchllm-perf-"))
    body = tmp / "body.json"
    body.write_text(json.dumps({**BODY, "stream": True} if args.kind == "stream" else BODY))
    # The fixed-answer mock (a precomputed stream of 8 chunks for a stream)
    upstream = start_mock_upstream(tmp, fixed=True, cpu=1)
    headers: dict[str, str] = {}
    if args.kind in ("ceiling", "floor"):
        port = free_port()
        extra = ["--rsgi-read"] if args.kind == "floor" else []
        server = start([str(ROOT / "bench" / "load" / "ceiling.py"), str(port),
                        "--sched-batch", *extra], {}, port, tmp / "ceiling.log", "/", cpu=0)
        url = server.url
    else:
        env = {"OPENAI_BASE_URL": upstream.url + "/v1", "OPENAI_API_KEY": "sk-bench",
               "WATCHLLM_ADMIN_KEY": "bench-admin", "WATCHLLM_LOG_LEVEL": "warning",
               **({"WATCHLLM_CLICKHOUSE_URL": "off"} if args.events == "off" else {}),
               **json.loads(args.env)}
        server = start_gateway(tmp / "gw", env, cpu=0)
        headers = {"authorization": f"Bearer {make_key(server, 'bench-admin')}"}
        if args.kind in ("passthrough", "stream"):
            headers["x-watchllm-cache-mode"] = "off"
        url = server.url + "/v1/chat/completions"
    try:
        hey(url, 2, body, headers)  # warm-up
        data = tmp / "perf.data"
        result: dict[str, float] = {}
        load = threading.Thread(target=lambda: result.update(
            hey(url, args.seconds + 2, body, headers)))
        load.start()
        time.sleep(1)
        pids = ",".join(map(str, _tree(server.proc.pid)))  # granian's workers are children
        subprocess.run(["perf", "record", "-q", "-e", "cpu-clock", "-F", str(HZ), "-o",
                        str(data), "-p", pids, "--", "sleep", str(args.seconds)],
                       check=True, capture_output=True)
        load.join()
        served = result["rps"] * args.seconds  # requests in the recorded window
        print(f"{args.kind}: {result['rps']:,.0f} requests/s; CPU µs per request by thread, "
              "shared object, symbol:")
        for sort in ("pid", "dso", "dso,sym"):
            out = subprocess.run(["perf", "report", "-i", str(data), "--stdio", "-n",
                                  "--sort", sort, "--percent-limit", "0.3"],
                                 capture_output=True, text=True, check=True).stdout
            rows = [line.split(None, 2) for line in out.splitlines()
                    if line.strip() and not line.startswith("#")]
            total = 0.0
            print(f"\n== {args.kind}, by {sort} ==")
            for pct, samples, what in rows[:args.top]:
                us = int(samples) * 1e6 / HZ / served
                total += us
                print(f"{us:7.2f} µs  {pct:>7}  {what}")
            if sort != "dso,sym":
                print(f"{total:7.2f} µs  in all (shown)")
    finally:
        server.stop()
        upstream.stop()


if __name__ == "__main__":
    main()
