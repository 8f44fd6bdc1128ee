"""Interleaved A/B of gateway configurations, for differences smaller than this VM's noise.

    .venv/bin/python bench/load/ab.py '{"a": {"ENV": "1"}, "b": {}}' [--rounds 10]
        [--seconds 2] [--kind hit|passthrough|stream] [--events off|chdb|http] [--rate R]
        [--replicas N] [--provider-headers] [--ceiling [--floor]] [--paced MS]
        [--yardstick] [--lean]

Each configuration is a gateway (one worker, core 0) in front of the fixed-answer mock
(core 1); all run at once, and `hey -c 50` (core 1) drives them in turn for a short
window, round after round, so a slow minute of the machine hits every configuration alike.
Prints the median gateway CPU per request and requests/s, and every round's CPU; with
`--rate R` the load is open loop at R requests/s (oha, see run.py's fixed_rate) and p99
latency is printed too.

`--replicas N` starts N gateway processes per configuration and measures each in every
round: two processes of the same configuration can differ by ~10% here for the whole of
a run (memory layout, which lines share a cache set), so a difference between two single
processes is not yet a difference between configurations. Each replica's median is
printed too.

`--ceiling` also runs issue 4's ceiling, the minimal granian app returning a fixed answer
(`ceiling.py`, under SCHED_BATCH as the gateway runs), one per replica on core 0, measured
in every round next to the gateways, and prints each configuration's requests/s as a
share of the ceiling's in the same round and replica (median and every round): a slow
minute of the VM then moves both sides of the ratio alike. `--floor` adds, as a
configuration of its own, the RSGI app that reads the body and answers (`ceiling.py
--rsgi-read`): what any hit path on this stack costs before our code runs.

`--yardstick` also runs issue 2's yardstick, the featureless granian + aiohttp
pass-through (`aiohttp_passthrough.py`, one per replica on core 0, in front of a
fixed-answer mock on core 1), measured with a plain request in every round next to the
gateways, and prints each configuration's CPU per request as a share of the yardstick's in
the same round and replica (issue 2's bound: 0.2 / 0.22 ms = 91%); with `--rate`, the
yardstick runs at that rate too, so both sides are measured at the same load. `run.py` measures the
two minutes apart, and this VM's speed moves by more than the margin in that time.
`--lean` adds, as a configuration of its own, the gateway's transport without its
features (`lean_passthrough.py`: granian RSGI and the lean client, streams piped), in
front of the same upstream: the gateway minus it is what the features cost.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import BODY, ROOT, fixed_rate, hey, make_key, measured, services_on

from watchllm.testing.servers import (
    ensure_database,
    free_port,
    start,
    start_gateway,
    start_mock_upstream,
)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("variants", help='JSON: {"name": {"ENV_VAR": "value"}, ...}')
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--seconds", type=int, default=2)
    p.add_argument("--kind", choices=("hit", "passthrough", "stream"), default="hit")
    p.add_argument("--paced", type=float, default=0.0, help="a stream's upstream waits MS "
                   "between events, so each arrives in a read of its own, as a model's "
                   "tokens do (unpaced, a stream mostly arrives in one or two reads)")
    p.add_argument("--events", choices=("off", "chdb", "http"), default="off",
                   help="events: nowhere, embedded chDB, or RowBinary over HTTP to a "
                   "stand-in ClickHouse endpoint on core 1")
    p.add_argument("--rate", type=int, default=0, help="open loop at this rate (default: "
                   "closed loop, hey -c 50)")
    p.add_argument("--replicas", type=int, default=1, help="gateway processes per "
                   "configuration, each measured every round")
    p.add_argument("--provider-headers", action="store_true", help="the mock upstream "
                   "sends OpenAI's headers with each answer (x-ratelimit-* among them)")
    p.add_argument("--ceiling", action="store_true", help="measure the ceiling app in "
                   "each round too, and print each configuration's share of it")
    p.add_argument("--floor", action="store_true", help="with --ceiling: also the RSGI "
                   "app that reads the body and answers (ceiling.py --rsgi-read)")
    p.add_argument("--yardstick", action="store_true", help="measure the featureless "
                   "granian + aiohttp pass-through (a plain request) in each round too, and "
                   "print each configuration's CPU as a share of it")
    p.add_argument("--lean", action="store_true", help="also the gateway's transport "
                   "without its features (lean_passthrough.py), as a configuration")
    args = p.parse_args()
    args.ceiling = args.ceiling or args.floor  # the floor is a share of the ceiling
    tmp = Path(tempfile.mkdtemp(prefix="watchllm-ab-"))
    body = tmp / "body.json"
    stream = {"stream": True, **({"mock": {"chunk_delay_ms": args.paced}} if args.paced else {})}
    body.write_text(json.dumps({**BODY, **stream} if args.kind == "stream" else BODY))
    # The fixed-answer mock streams its precomputed 8 chunks; only a paced stream needs the
    # scripted one (slower: sharing core 1 with hey, it would cap the gateway's rate).
    upstream = start_mock_upstream(tmp, fixed=not args.paced, cpu=1,
                                   provider_headers=args.provider_headers)
    base = {"OPENAI_BASE_URL": upstream.url + "/v1", "OPENAI_API_KEY": "sk-bench",
            "WATCHLLM_ADMIN_KEY": "bench-admin", "WATCHLLM_LOG_LEVEL": "warning",
            **({"WATCHLLM_CLICKHOUSE_URL": "off"} if args.events == "off" else {})}
    servers = [upstream]
    if args.events == "http":
        port = free_port()
        fake = [str(ROOT / "bench" / "micro" / "fake_clickhouse.py"), str(port), "--idle"]
        servers.append(start(fake, {}, port, tmp / "clickhouse.log", "/ping", cpu=1))
        base["WATCHLLM_CLICKHOUSE_URL"] = f"http://127.0.0.1:{port}"
    variants = json.loads(args.variants)
    for env in variants.values():  # a fresh machine has no bench database yet
        if (url := env.get("WATCHLLM_DATABASE_URL", "")).startswith("postgresql://"):
            dsn, _, name = url.rpartition("/")
            ensure_database(name, dsn)
    gateways = {name: [start_gateway(Path(tempfile.mkdtemp(dir=tmp)), {**base, **env}, cpu=0)
                       for _ in range(args.replicas)]
                for name, env in variants.items()}
    floor = "RSGI app reading the body (floor)"
    if args.ceiling and args.floor:
        gateways[floor] = []
        for _ in range(args.replicas):
            port = free_port()
            gateways[floor].append(start([str(ROOT / "bench" / "load" / "ceiling.py"),
                                          str(port), "--sched-batch", "--rsgi-read"], {},
                                         port, tmp / f"floor-{port}.log", "/", cpu=0))
    lean = "lean pass-through (transport, no features)"
    if args.lean:
        gateways[lean] = []
        for _ in range(args.replicas):
            port = free_port()
            gateways[lean].append(start([str(ROOT / "bench" / "load" / "lean_passthrough.py"),
                                         str(port), upstream.url, "--sched-batch"], {}, port,
                                        tmp / f"lean-{port}.log", "/_mock/stats", cpu=0))
    ceilings = []
    for _ in range(args.replicas if args.ceiling else 0):
        port = free_port()
        ceilings.append(start([str(ROOT / "bench" / "load" / "ceiling.py"), str(port),
                               "--sched-batch"], {}, port, tmp / f"ceiling-{port}.log", "/",
                              cpu=0))
    servers += ceilings
    yardsticks = []  # issue 2's: the featureless pass-through, in front of the fixed mock
    if args.yardstick:
        fixed = upstream if not args.paced else start_mock_upstream(tmp, fixed=True, cpu=1)
        if fixed is not upstream:
            servers.append(fixed)
        for _ in range(args.replicas):
            port = free_port()
            yardsticks.append(start([str(ROOT / "bench" / "load" / "aiohttp_passthrough.py"),
                                     str(port), fixed.url], {}, port,
                                    tmp / f"yardstick-{port}.log", "/_mock/stats", cpu=0))
        servers += yardsticks
        plain = tmp / "plain.json"
        plain.write_text(json.dumps(BODY))
    # Per configuration, per replica: each round's CPU µs/request, req/s, p99.
    cpu: dict[str, list[list[float]]] = {name: [[] for _ in gws] for name, gws in gateways.items()}
    rps: dict[str, list[float]] = {name: [] for name in gateways}
    # Per configuration: each round's req/s over the ceiling's (same round, same replica).
    share: dict[str, list[float]] = {name: [] for name in gateways}
    # Per configuration: each round's CPU over the yardstick's (same round, same replica).
    of_yardstick: dict[str, list[float]] = {name: [] for name in gateways}
    yardstick_cpu: list[float] = []
    p99: dict[str, list[float]] = {name: [] for name in gateways}
    try:
        headers: dict[int, dict[str, str]] = {}
        for name, gws in gateways.items():
            for gw in gws:
                if name in (floor, lean):
                    headers[gw.port] = {}
                    continue
                h = headers[gw.port] = {"authorization": f"Bearer {make_key(gw, 'bench-admin')}"}
                if args.kind != "hit":
                    h["x-watchllm-cache-mode"] = "off"
                hey(gw.url + "/v1/chat/completions", 2, body, h)  # warm-up
        with services_on(1):  # Redis and PostgreSQL off the gateway's core
            for _ in range(args.rounds):
                for i in range(args.replicas):
                    ceiling_rps = 0.0
                    if ceilings:
                        c = ceilings[i]
                        ceiling_rps = measured(c, lambda u=c.url: hey(
                            u, args.seconds, None, {}))["rps"]
                    yard_cpu = 0.0
                    if yardsticks:
                        y = yardsticks[i]
                        def load(u: str = y.url + "/v1/chat/completions") -> dict[str, float]:
                            if args.rate:  # at the gateways' load
                                return fixed_rate(u, args.seconds, plain, {}, args.rate)
                            return hey(u, args.seconds, plain, {})
                        yard_cpu = measured(y, load)["cpu_ms_per_req"] * 1000
                        yardstick_cpu.append(yard_cpu)
                    for name, gws in gateways.items():
                        gw = gws[i]
                        url, h = gw.url + "/v1/chat/completions", headers[gw.port]
                        if name == floor:
                            url = gw.url
                        if args.rate:
                            result = measured(gw, lambda u=url, hh=h: fixed_rate(
                                u, args.seconds, body, hh, args.rate))
                            p99[name].append(result["p99_ms"])
                        else:
                            result = measured(gw, lambda u=url, hh=h: hey(
                                u, args.seconds, body, hh))
                        cpu[name][i].append(result["cpu_ms_per_req"] * 1000)
                        rps[name].append(result["rps"])
                        if ceiling_rps:
                            share[name].append(result["rps"] / ceiling_rps)
                        if yard_cpu:
                            of_yardstick[name].append(cpu[name][i][-1] / yard_cpu)
    finally:
        for gws in gateways.values():
            for gw in gws:
                gw.stop()
        for server in servers:
            server.stop()
    print(f"\n`{' '.join(sys.argv)}`\n")
    if yardstick_cpu:
        print(f"yardstick (featureless granian + aiohttp, plain): median "
              f"{statistics.median(yardstick_cpu):.1f} µs CPU/request; rounds: "
              + ", ".join(f"{v:.0f}" for v in yardstick_cpu))
    for name, per_replica in cpu.items():
        values = [v for rounds in per_replica for v in rounds]
        print(f"{name}: median {statistics.median(values):.1f} µs CPU/request, "
              f"{statistics.median(rps[name]):,.0f} req/s; rounds: "
              + ", ".join(f"{v:.0f}" for v in values))
        if args.replicas > 1:
            print(f"{'':{len(name)}}  per replica: "
                  + ", ".join(f"{statistics.median(r):.1f}" for r in per_replica))
        if share[name]:
            print(f"{'':{len(name)}}  share of the ceiling app's req/s: median "
                  f"{statistics.median(share[name]):.0%}; rounds: "
                  + ", ".join(f"{v:.0%}" for v in share[name]))
        if of_yardstick[name]:
            print(f"{'':{len(name)}}  share of the yardstick's CPU/request: median "
                  f"{statistics.median(of_yardstick[name]):.0%}; rounds: "
                  + ", ".join(f"{v:.0%}" for v in of_yardstick[name]))
        if p99[name]:
            print(f"{'':{len(name)}}  p99 median {statistics.median(p99[name]):.2f} ms; rounds: "
                  + ", ".join(f"{v:.1f}" for v in p99[name]))


if __name__ == "__main__":
    main()
