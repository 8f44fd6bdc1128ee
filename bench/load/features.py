"""What each feature costs the passthrough path, side by side in one run.

    .venv/bin/python bench/load/features.py [--seconds 8] [--rounds 2]

Each configuration is a fresh gateway (one worker, core 0) in front of the fixed-answer
mock upstream (core 1), driven at saturation by `hey` (core 1) with caching off. Rounds
interleave the configurations to spread machine noise. Printed: requests/s, gateway CPU
per request, and each configuration's change against the baseline.
- baseline: embedded, event pipeline off, no limits
- pipeline: + the durable event pipeline into chDB (issue 5 target: <= 10% lower)
- limits: + per-key rpm/tpm limits in-process (issue 7 target: <= 5% lower)
- self-hosted: PostgreSQL metadata and Redis, without and with limits (Redis: one round
  trip per admit, one per settle when tokens need reconciling). Redis and PostgreSQL run
  on core 1 for the measurement (`run.services_on`), as the other machines they are in
  production.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import hey, make_key, measured, services_on

from watchllm.testing.servers import (
    Server,
    ensure_database,
    free_port,
    start,
    start_gateway,
    start_mock_upstream,
)

PG = "postgresql://postgres@127.0.0.1:5432"
LIMITS = {"WATCHLLM_DEFAULT_RPM": "100000000", "WATCHLLM_DEFAULT_TPM": "1000000000"}


def configs(upstream: Server, clickhouse_http: str) -> dict[str, dict[str, str]]:
    base = {"OPENAI_BASE_URL": upstream.url + "/v1", "OPENAI_API_KEY": "sk-bench",
            "WATCHLLM_ADMIN_KEY": "bench-admin", "WATCHLLM_LOG_LEVEL": "warning"}
    selfhosted = {**base, "WATCHLLM_MODE": "self_hosted", "WATCHLLM_CLICKHOUSE_URL": "off",
                  "WATCHLLM_DATABASE_URL": f"{PG}/watchllm_bench", "WATCHLLM_AUTO_MIGRATE": "true",
                  "WATCHLLM_REDIS_URL": "redis://127.0.0.1:6379/12"}
    return {
        "baseline": {**base, "WATCHLLM_CLICKHOUSE_URL": "off"},
        "pipeline": base,
        "limits": {**base, "WATCHLLM_CLICKHOUSE_URL": "off", **LIMITS},
        "self-hosted (PostgreSQL + Redis), no limits": selfhosted,
        # The pipeline's cost to the gateway when ClickHouse is a server: inserts go over
        # HTTP to a stand-in that accepts them (bench/micro/fake_clickhouse.py, core 1).
        "self-hosted + pipeline to ClickHouse over HTTP": {
            **selfhosted, "WATCHLLM_CLICKHOUSE_URL": clickhouse_http},
        "self-hosted + Redis limits": {**selfhosted, **LIMITS},
    }


def run_one(name: str, env: dict[str, str], tmp: Path, body: Path, seconds: int) -> dict[str, Any]:
    gw = start_gateway(Path(tempfile.mkdtemp(dir=tmp)), env, cpu=0)
    try:
        key = make_key(gw, "bench-admin")
        headers = {"authorization": f"Bearer {key}", "x-watchllm-cache-mode": "off"}
        url = gw.url + "/v1/chat/completions"
        hey(url, 2, body, headers)  # warm-up
        return measured(gw, lambda: hey(url, seconds, body, headers))
    finally:
        gw.stop()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seconds", type=int, default=8)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--only", default="", help="run configurations whose name contains this")
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="watchllm-features-"))
    ensure_database("watchllm_bench")
    body = tmp / "body.json"
    body.write_text(json.dumps({"model": "gpt-4o-mini",
                                "messages": [{"role": "user", "content": "Say hello"}]}))
    upstream = start_mock_upstream(tmp, fixed=True, cpu=1)
    port = free_port()
    fake_ch = start([str(Path(__file__).resolve().parents[1] / "micro" / "fake_clickhouse.py"),
                     str(port), "--idle"], {}, port, tmp / "fake_clickhouse.log", "/ping", cpu=1)
    results: dict[str, list[dict[str, Any]]] = {}
    try:
        with services_on(1):  # Redis and PostgreSQL off the gateway's core
            for _ in range(args.rounds):
                for name, env in configs(upstream, fake_ch.url).items():
                    if args.only and args.only not in name:
                        continue
                    results.setdefault(name, []).append(
                        run_one(name, env, tmp, body, args.seconds))
        # Proof the HTTP pipeline really shipped its events (not just spooled them).
        query = urllib.parse.quote("SELECT bytes_received")
        with urllib.request.urlopen(f"{fake_ch.url}/?query={query}", timeout=5) as r:
            shipped = r.read().decode().strip()
    finally:
        upstream.stop()
        fake_ch.stop()

    def mean(name: str, field: str) -> float:
        return sum(r[field] for r in results[name]) / len(results[name])

    first = next(iter(results))
    base_rps, base_cpu = mean(first, "rps"), mean(first, "cpu_ms_per_req")
    print(f"\n`{' '.join(sys.argv)}` (mean of {args.rounds} interleaved rounds)\n")
    print("| configuration | requests/s | CPU ms/req | req/s vs baseline | non-200 |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name in results:
        rps, cpu = mean(name, "rps"), mean(name, "cpu_ms_per_req")
        errors = sum(int(r["non200"]) for r in results[name])
        print(f"| {name} | {rps:,.0f} | {cpu:.3f} | {rps / base_rps - 1:+.1%} | {errors} |")
    print(f"\nbaseline CPU {base_cpu:.3f} ms/req; RowBinary bytes received by the stand-in "
          f"ClickHouse: {shipped}")


if __name__ == "__main__":
    main()
