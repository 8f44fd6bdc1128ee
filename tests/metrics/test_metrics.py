from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from watchllm import metrics

ROOT = Path(__file__).resolve().parents[2]
RECORD = """
import sys
from watchllm import metrics
for _ in range(int(sys.argv[1])):
    metrics.record_request("chat/completions", "gpt-4o", 200, 0.12, 0.03, 10, 5, 0.001)
metrics.rate_limited("key", "rpm")
metrics.set_queue_depth("events", int(sys.argv[1]))
"""
RENDER = "from watchllm import metrics; sys_out = metrics.render(); print(sys_out.decode())"


def _python(code: str, env: dict[str, str], *args: str) -> str:
    return subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, env=env, check=True,
                          capture_output=True, text=True, timeout=60).stdout


def _sample(text: str, prefix: str) -> float:
    line = next(ln for ln in text.splitlines() if ln.startswith(prefix))
    return float(line.rsplit(" ", 1)[1])


def test_workers_are_summed_and_dead_workers_live_gauges_dropped(tmp_path: Path) -> None:
    directory = tmp_path / "prom"
    directory.mkdir()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory), "PYTHONPATH": str(ROOT)}
    _python(RECORD, env, "3")  # two worker processes, then both exit
    _python(RECORD, env, "4")
    out = _python(RENDER, env)
    assert _sample(out, 'watchllm_requests_total{model="gpt-4o",route="chat/completions",'
                        'status="200"}') == 7
    assert _sample(out, 'watchllm_request_duration_seconds_count{route="chat/completions"}') == 7
    assert _sample(out, 'watchllm_rate_limited_total{limit="rpm",scope="key"}') == 2
    assert _sample(out, 'watchllm_cost_usd_total{model="gpt-4o"}') == 0.007
    # Both recording processes have exited: their live queue-depth gauges are gone.
    assert 'watchllm_queue_depth{queue="events"}' not in out


def test_single_process_render_and_bounded_model_labels() -> None:
    metrics.record_request("embeddings", "text-embedding-3-small", 200, 0.01)
    for i in range(metrics.MAX_MODELS + 5):
        metrics.record_request("chat/completions", f"m-{i}", 200, 0.01)
    metrics.record_request("chat/completions", "m-0", 200, 0.01, outcome="HIT")
    metrics.upstream_error("openai", "timeout")
    metrics.set_backend_up("redis", False)
    text = metrics.render().decode()
    assert 'watchllm_cache_lookups_total{outcome="HIT"}' in text
    assert 'watchllm_upstream_errors_total{kind="timeout",provider="openai"}' in text
    assert 'watchllm_backend_up{backend="redis"} 0.0' in text
    assert 'model="other"' in text


async def test_metrics_endpoint_answers_prometheus_text() -> None:
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await metrics.metrics_endpoint(None, None, send)  # type: ignore[arg-type]
    assert sent[0]["status"] == 200
    assert dict(sent[0]["headers"])[b"content-type"].startswith(b"text/plain")
    assert b"watchllm_requests_total" in sent[1]["body"]


async def test_deferred_histograms_equal_direct_observation() -> None:
    """Samples summed in dicts and flushed give the buckets Histogram.observe would."""
    import prometheus_client as prom

    values = [0.0, 0.005, 0.0051, 0.1, 0.25, 7.0, 119.9, 500.0]  # edges, inside, above
    direct = prom.Histogram("x_seconds", "x", ("route",), registry=prom.CollectorRegistry(),
                            buckets=metrics.LATENCY_BUCKETS)
    for i, v in enumerate(values):
        direct.labels("r-eq").observe(v)
        # Several (model, status) keys of one route: their histograms sum per route.
        metrics.record_request("r-eq", "gpt-4o" if i % 2 else "gpt-4o-mini",
                               200 if i % 3 else 502, v, ttft_s=v)  # in a loop: flushed later
    assert metrics._pending.scheduled
    text = metrics.render().decode()  # a scrape flushes first
    assert metrics._m is not None
    for sample in direct.collect()[0].samples:
        if sample.name.endswith("_bucket"):
            got = metrics._m.registry.get_sample_value(
                "watchllm_request_duration_seconds_bucket",
                {"route": "r-eq", "le": sample.labels["le"]})
            assert got == sample.value, sample.labels["le"]
    assert 'watchllm_request_duration_seconds_count{route="r-eq"} 8.0' in text
    assert 'watchllm_time_to_first_token_seconds_count{route="r-eq"} 8.0' in text
    metrics.record_request("r-no-ttft", "gpt-4o", 200, 0.1)  # no TTFT: no TTFT series
    text = metrics.render().decode()
    assert 'watchllm_request_duration_seconds_count{route="r-no-ttft"} 1.0' in text
    assert not [line for line in text.splitlines()
                if line.startswith("watchllm_time_to_first_token") and "r-no-ttft" in line]
