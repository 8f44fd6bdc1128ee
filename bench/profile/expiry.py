"""What the per-worker metadata caches' expiry costs a busy worker, in process.

    .venv/bin/python bench/profile/expiry.py [SECONDS] [CONC]

An embedded gateway (events off, rpm/tpm limits on) answers cache hits to CONC (50)
concurrent callers of one key for SECONDS (6), once with `WATCHLLM_KEY_CACHE_TTL=1` (an
expiry every second) and once with 3600 (none): the baseline in the same run. Printed per
row: requests, reads of the metadata store (SQLite, counted at `fetch_all`), the slowest
request and how many took over 2 ms. Run it with `PYTHONPATH=<another checkout>` to
measure that checkout's code (docs/performance.md, "Session 10").
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from watchllm.app import Gateway
from watchllm.entrypoints.factory import build_env
from watchllm.env.embedded.sqlite import SqliteDatabase
from watchllm.settings import load_settings

BODY = orjson.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]})
READS = [0]
_fetch_all = SqliteDatabase.fetch_all


async def _counted(self: SqliteDatabase, sql: str, params: Any = ()) -> Any:
    READS[0] += 1
    return await _fetch_all(self, sql, params)


async def run(ttl: str, seconds: float, conc: int) -> str:
    env = {"WATCHLLM_DATA_DIR": tempfile.mkdtemp(), "WATCHLLM_CLICKHOUSE_URL": "off",
           "WATCHLLM_KEY_CACHE_TTL": ttl, "WATCHLLM_DEFAULT_RPM": "100000000",
           "WATCHLLM_DEFAULT_TPM": "1000000000"}
    gw = Gateway(load_settings(env, None), build_env)
    await gw.startup()
    project = await gw.store.create_project("p")
    _, key = await gw.store.create_key(project.id)
    scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions",
             "query_string": b"", "headers": [(b"authorization", f"Bearer {key}".encode()),
                                              (b"content-type", b"application/json")]}

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": BODY, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        pass

    await gw(scope, receive, send)  # the answer cached
    done, slow, worst = 0, 0, 0.0
    READS[0] = 0
    end = time.monotonic() + seconds

    async def caller() -> None:
        nonlocal done, slow, worst
        while time.monotonic() < end:
            t = time.perf_counter()
            await gw(scope, receive, send)
            took = time.perf_counter() - t
            worst = max(worst, took)
            slow += took > 0.002
            done += 1
            await asyncio.sleep(0)  # a hit never suspends: let the other callers run

    await asyncio.gather(*(caller() for _ in range(conc)))
    await gw.shutdown()
    return (f"| {ttl} s | {done:,} | {READS[0]:,} | {worst * 1000:.1f} ms | {slow:,} |")


async def main(seconds: float, conc: int) -> None:
    SqliteDatabase.fetch_all = _counted  # type: ignore[method-assign]
    rows = [await run(ttl, seconds, conc) for ttl in ("1", "3600")]
    print(f"\n`{' '.join(sys.argv)}`: {conc} callers, {seconds:g} s per row\n")
    print("| key cache TTL | requests | store reads | slowest | over 2 ms |")
    print("| --- | ---: | ---: | ---: | ---: |")
    print("\n".join(rows))


if __name__ == "__main__":
    import uvloop

    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    uvloop.run(main(float(args[0]) if args else 6.0, int(args[1]) if len(args) > 1 else 50))
