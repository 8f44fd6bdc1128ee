"""Drive the RSGI entry point in-process on remembered cache hits (the fast lane), to see
what our own code costs per hit without granian's I/O around it.

    .venv/bin/python bench/profile/rsgi_hit.py [N] [CONC] [--profile] [--events] [--opcodes]

The scope and protocol objects are minimal stand-ins for granian's (headers as a dict,
the body returned by awaiting the protocol). `--events` keeps the embedded event pipeline
(chDB) on; by default events go nowhere (`WATCHLLM_CLICKHOUSE_URL=off`).
Prints microseconds of CPU per request; `--opcodes` also counts the Python bytecodes
each function runs per hit (sys.settrace; N ~ 500; the CPU printed then is the tracer's).
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

BODY = orjson.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]})


class Scope:
    proto = "http"
    method = "POST"
    path = "/v1/chat/completions"
    query_string = ""
    scheme = "http"
    http_version = "1.1"

    def __init__(self, headers: dict[str, str]) -> None:
        self.headers = headers


class Proto:
    def __init__(self) -> None:
        self.status = 0

    def __await__(self) -> Any:
        if False:
            yield
        return BODY

    def __call__(self) -> Proto:
        return self

    def response_bytes(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.status = status


async def main(n: int, concurrency: int, profile: bool) -> None:
    os.environ["WATCHLLM_DATA_DIR"] = tempfile.mkdtemp()
    if "--events" not in sys.argv:
        os.environ["WATCHLLM_CLICKHOUSE_URL"] = "off"
    from watchllm.app import Gateway
    from watchllm.entrypoints.factory import build_env
    from watchllm.entrypoints.rsgi import RSGIGateway
    from watchllm.settings import load_settings

    gw = Gateway(load_settings(dict(os.environ), None), build_env)
    app = RSGIGateway(gw)
    await gw.startup()
    project = await gw.store.create_project(f"p{time.time_ns()}")
    _, key = await gw.store.create_key(project.id)
    scope = Scope({"authorization": f"Bearer {key}", "content-type": "application/json",
                   "content-length": str(len(BODY)), "host": "localhost",
                   "user-agent": "OpenAI/Python 1.0", "accept": "application/json"})
    proto = Proto()
    for _ in range(200):
        await app.__rsgi__(scope, proto)
    assert proto.status == 200
    assert len(gw.hot) == 1, "the repeat was not remembered"
    counts = opcodes.start() if "--opcodes" in sys.argv else None
    prof = cProfile.Profile() if profile else None
    if prof:
        prof.enable()
    start = time.process_time()

    async def worker(count: int) -> None:
        for _ in range(count):
            await app.__rsgi__(scope, proto)

    await asyncio.gather(*(worker(n // concurrency) for _ in range(concurrency)))
    elapsed = time.process_time() - start
    if counts is not None:
        opcodes.report(counts, n, "hit")
    if prof:
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(30)
    print(f"remembered hit over RSGI: {elapsed / n * 1e6:.1f} us CPU per request (n={n})")
    await gw.shutdown()


if __name__ == "__main__":
    import uvloop

    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    uvloop.install()
    asyncio.run(main(int(args[0]) if args else 50000, int(args[1]) if len(args) > 1 else 50,
                     "--profile" in sys.argv))
