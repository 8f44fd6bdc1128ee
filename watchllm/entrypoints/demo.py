"""`watchllm demo`: start the gateway, make a project key, send real OpenAI-SDK requests.

With no OPENAI_API_KEY the requests go to the built-in mock provider, so this runs on a
fresh machine with no network.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

from watchllm.settings import Settings


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _make_key(settings: Settings) -> str:
    from watchllm.entrypoints.factory import open_database
    from watchllm.errors import NotFoundError
    from watchllm.metadata.migrate import migrate
    from watchllm.metadata.store import MetadataStore

    db = await open_database(settings)
    try:
        await migrate(db)
        store = MetadataStore(db)
        try:
            project = await store.find_project("demo")
        except NotFoundError:
            project = await store.create_project("demo")
        _, key = await store.create_key(project.id, "demo")
        return key
    finally:
        await db.close()


def _wait_healthy(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the gateway exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(url + "/health", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise SystemExit("the gateway did not become healthy in time")


def _show_events(base: str, key: str, timeout_s: float = 15) -> None:
    """The events of the calls above, read back from ClickHouse through the analytics API."""
    import json

    request = urllib.request.Request(f"{base}/v1/analytics/logs?limit=3",
                                     headers={"authorization": f"Bearer {key}"})
    deadline = time.monotonic() + timeout_s
    rows: list[dict[str, object]] = []
    while time.monotonic() < deadline and len(rows) < 3:
        time.sleep(0.5)  # events reach ClickHouse in batches (WATCHLLM_EVENTS_FLUSH_MS)
        try:
            with urllib.request.urlopen(request, timeout=5) as r:
                rows = json.load(r).get("data", [])
        except OSError as exc:  # analytics off (WATCHLLM_CLICKHOUSE_URL=off)
            print(f"[analytics] not available: {exc}")
            return
    print(f"[analytics] {len(rows)} newest events, read back from ClickHouse:")
    for row in rows:
        print(f"    {row.get('timestamp')}  {row.get('model')}  status={row.get('status')} "
              f"cache={row.get('cache_status')} tokens={row.get('tokens_input')}/"
              f"{row.get('tokens_output')} latency_ms={row.get('latency_ms')}")


def run_demo(settings: Settings) -> int:
    import openai
    from openai.types.chat import ChatCompletionMessageParam

    key = asyncio.run(_make_key(settings))
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "WATCHLLM_PORT": str(port)}
    proc = subprocess.Popen([sys.executable, "-m", "watchllm.entrypoints.cli", "serve"], env=env)
    try:
        _wait_healthy(base, proc)
        client = openai.OpenAI(base_url=base + "/v1", api_key=key)
        model = os.environ.get("WATCHLLM_DEMO_MODEL", "gpt-4o-mini")
        question: list[ChatCompletionMessageParam] = [
            {"role": "user", "content": "What does an LLM gateway do?"}
        ]
        print(f"\n== WatchLLM on {base} (provider: {settings.default_provider}) ==")
        for attempt in ("first call", "same call again"):
            raw = client.chat.completions.with_raw_response.create(model=model, messages=question)
            reply = raw.parse()
            print(f"[{attempt}] {reply.choices[0].message.content!r}")
            print(f"    tokens {reply.usage.prompt_tokens if reply.usage else '?'} in / "
                  f"{reply.usage.completion_tokens if reply.usage else '?'} out; "
                  f"x-watchllm-cache={raw.headers.get('x-watchllm-cache', '-')} "
                  f"x-watchllm-latency-ms={raw.headers.get('x-watchllm-latency-ms')} "
                  f"x-request-id={raw.headers.get('x-request-id')}")
        print("[streaming] ", end="", flush=True)
        for chunk in client.chat.completions.create(model=model, messages=question, stream=True):
            if chunk.choices and chunk.choices[0].delta.content:
                print(chunk.choices[0].delta.content, end="", flush=True)
        print()
        _show_events(base, key)
        print("== demo OK ==")
        return 0
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
