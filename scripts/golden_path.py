"""The golden path, against any WatchLLM deployment: SDK -> gateway -> queue -> ClickHouse
-> analytics API returns exactly what was sent.

    python scripts/golden_path.py --base-url http://127.0.0.1:8080 --admin-key $WATCHLLM_ADMIN_KEY
    python scripts/golden_path.py --base-url https://gw.example.com --api-key wl_...

With --admin-key it creates a fresh project and key, so the project's stats must equal
the sent events exactly; with --api-key (scopes ingest + analytics) it checks the run and
every event, and stats only as "at least". Exits 0 on success, 1 with a diff otherwise.
Needs only the standard library and the watchllm package (the SDK).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from typing import Any

from watchllm.sdk import WatchLLM
from watchllm.sdk._transport import urllib_transport


def http(method: str, url: str, key: str, body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={
        "authorization": f"Bearer {key}", "content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def fresh_key(base: str, admin: str, name: str) -> tuple[str, str]:
    status, project = http("POST", f"{base}/v1/admin/projects", admin, {"name": name})
    assert status == 201, project
    status, key = http("POST", f"{base}/v1/admin/keys", admin, {"project_id": project["id"]})
    assert status == 201, key
    return project["id"], key["key"]


def send_everything(wl: WatchLLM) -> str:
    """One event of every type inside one run; returns the run_id."""
    with wl.run("golden-path", tags=["golden"], metadata={"check": "golden_path"}) as run:
        run.log_prompt_call("gpt-4o-mini", "What is 2+2?", "4", provider="openai",
                            tokens_input=12, tokens_output=1, tokens_cached=2,
                            latency_ms=321.5, time_to_first_token_ms=120.25,
                            cost_estimate_usd=0.0000123, http_status=200,
                            cache_status="MISS", user_id="user-42")
        with run.step("lookup", step_type="tool", input={"q": "2+2"}) as step:
            step.output = "4"
        run.log_tool_call("calculator", {"expr": "2+2"}, "4", latency_ms=1.75)
        run.log_error("ToolTimeout", "calculator took too long", stack_trace="trace...")
        run.log_assertion_failed("answer_is_number", expected="int", actual="str",
                                 message="not a number", severity="warning")
        run.log_hallucination("llm-judge", confidence=0.875, claim="2+2=5", evidence="math")
        run.log_cost_threshold_exceeded(0.01, 0.0125, window="run")
        run.log_performance_alert("latency_p95_ms", 300, 321.5, unit="ms")
    return run.run_id


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base-url", required=True)
    p.add_argument("--api-key", help="a project key with ingest and analytics scopes")
    p.add_argument("--admin-key", help="create a fresh project and key with it")
    p.add_argument("--timeout", type=float, default=60.0, help="wait for ClickHouse (s)")
    a = p.parse_args(argv)
    base = a.base_url.rstrip("/").removesuffix("/v1")
    fresh = a.api_key is None
    if fresh:
        if not a.admin_key:
            p.error("pass --api-key or --admin-key")
        _, key = fresh_key(base, a.admin_key, f"golden-{int(time.time() * 1000)}")
    else:
        key = a.api_key

    sent: list[dict[str, Any]] = []

    def recording(url: str, body: bytes, headers: Mapping[str, str],
                  timeout: float) -> tuple[int, Mapping[str, str], bytes]:
        status, h, raw = urllib_transport(url, body, headers, timeout)
        if 200 <= status < 300:
            sent.extend(json.loads(body)["events"])
        return status, h, raw

    started = time.time()
    wl = WatchLLM(key, base, transport=recording, flush_interval=0.2)
    run_id = send_everything(wl)
    wl.close()
    problems: list[str] = []
    if wl.stats["sent"] != len(sent) or not sent or wl.stats["invalid"] or wl.stats["failed"]:
        problems.append(f"SDK delivery: {wl.stats}")
    print(f"sent {len(sent)} events in run {run_id} ({time.time() - started:.2f} s)")

    deadline = time.monotonic() + a.timeout
    run: Any = None
    while time.monotonic() < deadline:
        status, run = http("GET", f"{base}/v1/analytics/runs/{urllib.parse.quote(run_id)}", key)
        if status == 200 and len(run["events"]) >= len(sent):
            break
        time.sleep(0.25)
    else:
        problems.append(f"run {run_id} did not show {len(sent)} events within {a.timeout}s")
    print(f"queryable after {time.time() - started:.2f} s")

    if run and "events" in run:
        order = sorted(sent, key=lambda e: (e["timestamp"], e["event_id"]))
        got_ids = [e["event_id"] for e in run["events"]]
        if got_ids != [e["event_id"] for e in order]:
            problems.append(f"run order: {got_ids}")
    for event in sent:
        status, got = http("GET", f"{base}/v1/analytics/event/{event['event_id']}", key)
        diff = {k: (v, got.get(k)) for k, v in event.items() if got.get(k) != v} \
            if status == 200 else {"status": status}
        if diff:
            problems.append(f"{event['event_type']} {event['event_id']}: {diff}")

    calls = [e for e in sent if e["event_type"] in ("prompt_call", "error")]
    status, stats = http("GET", f"{base}/v1/analytics/stats?from={int(started * 1000) - 60_000}",
                         key)
    want = {"requests": len(calls), "tokens_input": sum(e.get("tokens_input", 0) for e in calls),
            "tokens_output": sum(e.get("tokens_output", 0) for e in calls)}
    for name, value in want.items():
        have = stats.get(name) if status == 200 else None
        if have is None or (have != value if fresh else have < value):
            problems.append(f"stats.{name}: sent {value}, API says {have}")

    for line in problems:
        print("FAIL", line)
    print("golden path:", "FAIL" if problems else "OK")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
