"""Instructions per request at the server — granian, the RSGI adapter and the gateway —
under callgrind, for variants of the environment: a deterministic A/B where a timed one
drowns in a VM's noise.

    .venv/bin/python bench/profile/server_callgrind.py '{"off": {}, "limits":
        {"WATCHLLM_DEFAULT_RPM": "100000000", "WATCHLLM_DEFAULT_TPM": "1000000000"}}' \
        [--kind passthrough|stream] [--requests 2000] [--paced=MS] [--top 25]

A variant may set its own kind and pacing with the keys "_kind" and "_paced" (a stream
against a plain request: '{"plain": {}, "stream": {"_kind": "stream", "_paced": "1"}}').

Each variant: a mock upstream (core 1), the gateway under `valgrind --tool=callgrind`
(core 0, events off), 400 requests of warm-up, the counters zeroed, then `--requests`
requests (`hey -c 2`), and a dump. Prints the instructions per request of each variant,
and for each variant after the first its difference from the first by shared object and
by function (self cost). User space only: the kernel's part (syscalls, wake-ups) and
cache misses are not in these counts. Under valgrind the gateway runs ~50x slower, so
anything driven by the clock (the limits' prefetch on Redis) happens more often per
request than at full speed; `--paced=MS` makes a stream's upstream wait between events,
so that each arrives in a read of its own, as at full speed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "load"))

from run import BODY, make_key  # bench/load/run.py

from watchllm.testing.servers import free_port, start_mock_upstream, wait_ready

ADMIN = "wl_admin_callgrind"


def _cost_lines(path: Path) -> dict[tuple[str, str], int]:
    """Self cost per (object, function) of a callgrind dump (name compression resolved;
    a call's inclusive cost line is skipped)."""
    names: dict[str, dict[str, str]] = {"ob": {}, "fn": {}}
    obj = fn = ""
    skip = False
    out: dict[tuple[str, str], int] = defaultdict(int)
    spec = re.compile(r"(c?)(ob|fn|fl|fi|fe)=\((\d+)\)(?: (.*))?")
    for line in path.read_text(errors="replace").splitlines():
        m = spec.match(line)
        if m:
            called, kind, ident, name = m.groups()
            if kind in names and name:
                names[kind][ident] = name
            if not called and kind == "ob":
                obj = names["ob"].get(ident, "?").rsplit("/", 1)[-1]
            elif not called and kind == "fn":
                fn = names["fn"].get(ident, "?")
            continue
        if line.startswith("calls="):
            skip = True
        elif line[:1].isdigit() or line[:1] in "+-*":
            if skip:
                skip = False
            elif len(parts := line.split()) >= 2:
                out[(obj, fn)] += int(parts[1])
    return out


def _run(label: str, extra: dict[str, str], args: argparse.Namespace,
         tmp: Path) -> dict[tuple[str, str], int]:
    extra = dict(extra)
    kind, paced = extra.pop("_kind", args.kind), float(extra.pop("_paced", args.paced))
    upstream = start_mock_upstream(tmp, fixed=not paced, cpu=1)  # paced: the scripted one
    port = free_port()
    data = tmp / label
    data.mkdir()
    env = {**os.environ, "WATCHLLM_DATA_DIR": str(data), "WATCHLLM_PORT": str(port),
           "WATCHLLM_WORKERS": "1", "WATCHLLM_CLICKHOUSE_URL": "off",
           "WATCHLLM_ADMIN_KEY": ADMIN, "OPENAI_BASE_URL": upstream.url + "/v1",
           "OPENAI_API_KEY": "sk-callgrind", "PYTHONHASHSEED": "0", **extra}
    out = tmp / f"cg.{label}"
    log = tmp / f"{label}.log"
    proc = subprocess.Popen(
        ["taskset", "-c", "0", "valgrind", "--tool=callgrind", "--trace-children=yes",
         f"--callgrind-out-file={out}.%p", sys.executable, "-m", "watchllm.entrypoints.cli",
         "serve"], env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_ready(url + "/health", proc, log, timeout=300)
        key = make_key(type("S", (), {"url": url})(), ADMIN)  # type: ignore[arg-type]
        body = {**BODY, "stream": True} if kind == "stream" else dict(BODY)
        if paced:
            body["mock"] = {"chunk_delay_ms": paced}
        (tmp / "body.json").write_text(json.dumps(body))

        def load(n: int) -> None:
            res = subprocess.run(
                ["taskset", "-c", "1", "hey", "-n", str(n), "-c", "2", "-m", "POST",
                 "-T", "application/json", "-D", str(tmp / "body.json"),
                 "-H", f"Authorization: Bearer {key}", "-H", "x-watchllm-cache-mode: off",
                 url + "/v1/chat/completions"], capture_output=True, text=True, check=True)
            ok = re.search(r"\[200\]\s+(\d+) responses", res.stdout)
            if not ok or int(ok.group(1)) != n:
                raise SystemExit(f"{label}: not every request succeeded:\n{res.stdout}")

        load(400)
        time.sleep(1)
        # every callgrind process of this run: granian's main process and its worker
        subprocess.run(["callgrind_control", "-z"], check=True, capture_output=True)
        load(args.requests)
        subprocess.run(["callgrind_control", "-d", label], check=True, capture_output=True)
        time.sleep(1)
    finally:
        proc.terminate()
        proc.wait(120)
        upstream.stop()
    # The worker is the process whose dump after zeroing holds the requests.
    dumps = [_cost_lines(p) for p in tmp.glob(f"cg.{label}.*.1")]
    return max(dumps, key=lambda d: sum(d.values()))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("variants", help='JSON: {"name": {ENV: value}}; the first is the base')
    p.add_argument("--kind", choices=("passthrough", "stream"), default="passthrough")
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--paced", type=float, default=0.0)
    p.add_argument("--top", type=int, default=25)
    args = p.parse_args()
    variants = json.loads(args.variants)
    tmp = Path(tempfile.mkdtemp(prefix="callgrind-"))
    n = args.requests
    costs = {name: _run(name, env, args, tmp) for name, env in variants.items()}
    base_name, base = next(iter(costs.items()))
    base_total = sum(base.values()) / n
    for name, cost in costs.items():
        total = sum(cost.values()) / n
        print(f"{name}: {total:,.0f} instructions per request"
              + ("" if cost is base else f" ({(total / base_total - 1) * 100:+.1f}% "
                 f"against {base_name})"))
    if len(costs) == 1:  # one variant: where its instructions go
        print(f"by function (self cost), the {args.top} largest:")
        for (obj, fn), c in sorted(base.items(), key=lambda kv: -kv[1])[:args.top]:
            print(f"  {c / n:10,.0f}  {fn[:90]}  [{obj}]")
    for name, cost in list(costs.items())[1:]:
        print(f"\n{name} minus {base_name}, per request, by object:")
        by_obj: dict[str, int] = defaultdict(int)
        for (obj, _), c in cost.items():
            by_obj[obj] += c
        for (obj, _), c in base.items():
            by_obj[obj] -= c
        for obj, c in sorted(by_obj.items(), key=lambda kv: -abs(kv[1]))[:8]:
            print(f"  {c / n:+10,.0f}  {obj}")
        print(f"by function (self cost), the {args.top} largest:")
        keys = set(cost) | set(base)
        diffs = sorted(((cost.get(k, 0) - base.get(k, 0), k) for k in keys),
                       key=lambda d: -abs(d[0]))
        for c, (obj, fn) in diffs[:args.top]:
            print(f"  {c / n:+10,.0f}  {fn[:90]}  [{obj}]")


if __name__ == "__main__":
    main()
