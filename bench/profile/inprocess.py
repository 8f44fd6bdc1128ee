"""Drive the ASGI app in-process (no server, no sockets) to profile our own per-request cost.

    .venv/bin/python bench/profile/inprocess.py [hit|miss|http|stream] [N] [CONC] \
        [--uvloop] [--profile] [--opcodes] [--limits] [--self-hosted] [--paced=MS] [--push]

`miss` uses the in-process mock provider with caching off, `http` a real mock upstream
over loopback (the lean HTTP client included; the upstream's own CPU is not counted),
`stream` the same upstream streaming its answer as SSE (cache off), `hit` a cached answer.
Prints
microseconds per request of pure application work. `--opcodes` instead counts the Python
bytecodes each function runs per request (sys.settrace; exact, and slow: use N ~ 50).
`--paced=MS`: the upstream waits MS between a stream's events (each arrives in a read of
its own, as a model's tokens do). `--push`: offer the synchronous body write granian's
RSGI entry offers (`BODY_PUSH`), so a stream is pushed from its reads as under granian,
not pulled by the task. `--profile` prints NSTATS functions (25) sorted by
NSORT (tottime; cumtime shows what a subsystem costs with its callees).
"""

from __future__ import annotations

import asyncio
import cProfile
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import opcodes  # bench/profile/opcodes.py

from watchllm.app import Gateway
from watchllm.entrypoints.factory import build_env
from watchllm.http.asgi import BODY_PUSH
from watchllm.settings import load_settings

BODY = orjson.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]})


async def main(kind: str, n: int, profile: bool, concurrency: int) -> None:
    data_dir = tempfile.mkdtemp()
    env = {"WATCHLLM_DATA_DIR": data_dir, "WATCHLLM_CLICKHOUSE_URL": "off",
           **({"WATCHLLM_DEFAULT_RPM": "100000000", "WATCHLLM_DEFAULT_TPM": "1000000000"}
              if "--limits" in sys.argv else {}),
           **({"WATCHLLM_MODE": "self_hosted", "WATCHLLM_AUTO_MIGRATE": "true",
               "WATCHLLM_DATABASE_URL": "postgresql://postgres@127.0.0.1:5432/watchllm_bench",
               "WATCHLLM_REDIS_URL": "redis://127.0.0.1:6379/12"}
              if "--self-hosted" in sys.argv else {})}
    upstream = None
    if kind in ("http", "stream"):  # a real upstream over loopback (the fixed-answer mock)
        from watchllm.testing.servers import start_mock_upstream

        upstream = start_mock_upstream(Path(data_dir), fixed=True, cpu=1)
        env |= {"OPENAI_BASE_URL": upstream.url + "/v1", "OPENAI_API_KEY": "sk-profile"}
    settings = load_settings(env, None)
    gw = Gateway(settings, build_env)
    await gw.startup()
    project = await gw.store.create_project(f"p{time.time_ns()}")
    _, key = await gw.store.create_key(project.id)
    headers = [(b"authorization", f"Bearer {key}".encode()),
               (b"content-type", b"application/json")]
    if kind in ("miss", "http", "stream"):
        headers.append((b"x-watchllm-cache-mode", b"off"))
    sent: list[Any] = []
    scope: dict[str, Any] = {"type": "http", "method": "POST", "path": "/v1/chat/completions",
                             "query_string": b"", "headers": headers}

    body = orjson.dumps({**orjson.loads(BODY), "stream": True}) if kind == "stream" else BODY
    paced = [a for a in sys.argv if a.startswith("--paced=")]
    if paced:  # the upstream waits this many ms between events: a read per event
        ms = float(paced[0].split("=", 1)[1])
        body = orjson.dumps({**orjson.loads(body), "mock": {"chunk_delay_ms": ms}})

    def make_receive() -> Any:
        calls = 0

        async def receive() -> dict[str, Any]:
            nonlocal calls
            calls += 1
            if calls > 1:  # the disconnect watcher of a stream: the client never leaves
                await asyncio.sleep(3600)
            return {"type": "http.request", "body": body, "more_body": False}
        return receive

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    if "--push" in sys.argv:  # as the RSGI entry's exchange offers it
        def push(body: bytes, more: bool) -> None:
            sent.append({"type": "http.response.body", "body": body, "more_body": more})

        scope["extensions"] = {BODY_PUSH: push}

    for _ in range(200):
        await gw(scope, make_receive(), send)
    assert sent[0]["status"] == 200, sent[:2]
    counts = opcodes.start() if "--opcodes" in sys.argv else None
    prof = cProfile.Profile() if profile else None
    if prof:
        prof.enable()
    start = time.process_time()  # CPU time: robust to other load on the machine

    async def worker(count: int) -> None:
        for _ in range(count):
            await gw(scope, make_receive(), send)
            sent.clear()

    await asyncio.gather(*(worker(n // concurrency) for _ in range(concurrency)))
    elapsed = time.process_time() - start
    if counts is not None:
        opcodes.report(counts, n, "request")
    if prof:
        prof.disable()
        rows = int(os.environ.get("NSTATS", "25"))  # how many functions --profile prints
        pstats.Stats(prof).sort_stats(os.environ.get("NSORT", "tottime")).print_stats(rows)
    print(f"{kind}: {elapsed / n * 1e6:.1f} us CPU per request (n={n})")
    if (pf := getattr(gw.limits, "_prefetch", None)) is not None and "--limits" in sys.argv:
        print(f"prefetch: {pf.granted} grants; {pf.missed} requests took the per-request path")
    await gw.shutdown()
    if upstream is not None:
        upstream.stop()


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    if "--uvloop" in sys.argv:
        import uvloop

        uvloop.install()
    if "--self-hosted" in sys.argv:
        from watchllm.testing.servers import ensure_database

        ensure_database("watchllm_bench")
    asyncio.run(main(args[0] if args else "hit", int(args[1]) if len(args) > 1 else 20000,
                     "--profile" in sys.argv, int(args[2]) if len(args) > 2 else 1))
