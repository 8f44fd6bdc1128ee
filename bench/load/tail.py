"""Cache-hit latency under a fixed rate, beside the ceiling app, in one run.

    .venv/bin/python bench/load/tail.py '{"name": {"ENV": "value"}, ...}' [--rate 5000]
        [--rounds 3] [--seconds 6]

The ceiling app (bench/load/ceiling.py) and one gateway per variant run at once on core 0;
the fixed-answer mock, the stand-in ClickHouse HTTP endpoint and `oha` (open loop, latency
from each request's scheduled start) on core 1. Round after round, each target gets the
same `--seconds` of load in turn; printed: median p50/p90/p99/p99.9/max and every round's
p99, and each gateway's reads of its metadata store (keys, limits, project settings,
provider keys) during the rounds: with `WATCHLLM_KEY_CACHE_TTL=1` a variant shows what
the caches' expiry costs (metadata/refresh.py).

A variant's events go to ClickHouse over HTTP with `"EVENTS": "http"`, nowhere with
`"EVENTS": "off"`, and to the embedded chDB by default. Run one chDB variant per run:
an idle gateway's engine still inserts (and merges) on core 0 while another is measured.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import BODY, ROOT, fixed_rate, hey, make_key

from watchllm.testing.servers import free_port, start, start_gateway, start_mock_upstream


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("variants", help='JSON: {"name": {"ENV_VAR": "value"}, ...}')
    p.add_argument("--rate", type=int, default=5000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=int, default=6)
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="watchllm-tail-"))
    body = tmp / "body.json"
    body.write_text(json.dumps(BODY))
    upstream = start_mock_upstream(tmp, fixed=True, cpu=1)
    port = free_port()
    fake = start([str(ROOT / "bench" / "micro" / "fake_clickhouse.py"), str(port), "--idle"],
                 {}, port, tmp / "clickhouse.log", "/ping", cpu=1)
    ceiling_port = free_port()
    ceiling = start([str(ROOT / "bench" / "load" / "ceiling.py"), str(ceiling_port)], {},
                    ceiling_port, tmp / "ceiling.log", "/", cpu=0)
    servers = [upstream, fake, ceiling]
    base = {"OPENAI_BASE_URL": upstream.url + "/v1", "OPENAI_API_KEY": "sk-bench",
            "WATCHLLM_ADMIN_KEY": "bench-admin", "WATCHLLM_LOG_LEVEL": "warning"}
    sinks = {"off": "off", "http": f"http://127.0.0.1:{port}"}
    targets: dict[str, tuple[str, Path | None, dict[str, str]]] = {
        "ceiling app": (ceiling.url + "/", None, {})}
    try:
        for name, env in json.loads(args.variants).items():
            env = dict(env)
            events = env.pop("EVENTS", "chdb")
            if events in sinks:
                env["WATCHLLM_CLICKHOUSE_URL"] = sinks[events]
            gw = start_gateway(Path(tempfile.mkdtemp(dir=tmp)), {**base, **env}, cpu=0)
            servers.append(gw)
            auth = {"authorization": f"Bearer {make_key(gw, 'bench-admin')}"}
            url = gw.url + "/v1/chat/completions"
            hey(url, 2, body, auth)  # warm: the answer cached, the repeat remembered
            targets[name] = (url, body, auth)
        runs: dict[str, list[dict[str, float]]] = {name: [] for name in targets}
        before = {name: metadata_reads(url) for name, (url, _, _) in targets.items()}
        for _ in range(args.rounds):
            for name, (url, data, headers) in targets.items():
                runs[name].append(fixed_rate(url, args.seconds, data, headers, args.rate))
        reads = {name: metadata_reads(url) - before[name] for name, (url, _, _) in
                 targets.items()}
    finally:
        for server in servers:
            server.stop()
    print(f"\n`{' '.join(sys.argv)}`: {args.rate} req/s, {args.seconds} s per round, "
          f"medians of {args.rounds} rounds\n")
    print("| target | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | p99 of each round "
          "| metadata reads |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | --- | ---: |")
    cols = ("p50_ms", "p90_ms", "p99_ms", "p99.9_ms", "max_ms")
    for name, rows in runs.items():
        med = [statistics.median(r.get(k, float("nan")) for r in rows) for k in cols]
        each = ", ".join(f"{r['p99_ms']:.2f}" for r in rows)
        read = "-" if name == "ceiling app" else f"{reads[name]:.0f}"
        print(f"| {name} | {' | '.join(f'{m:.2f}' for m in med)} | {each} | {read} |")


def metadata_reads(url: str) -> float:
    """watchllm_metadata_reads_total of the gateway serving `url`, all caches (0: none)."""
    if "/v1/" not in url:
        return 0.0
    text = urllib.request.urlopen(url.split("/v1/")[0] + "/metrics", timeout=10).read()
    return sum(float(line.rsplit(b" ", 1)[1]) for line in text.splitlines()
               if line.startswith(b"watchllm_metadata_reads_total"))


if __name__ == "__main__":
    main()
