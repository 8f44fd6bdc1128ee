"""Through a real gateway: when the per-worker metadata caches expire, concurrent requests
make one store read per cache, not one each; a key in use is reloaded in the background."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.e2e.conftest import gateway_env, new_key
from watchllm.testing.servers import Server, start_gateway


@pytest.fixture(scope="module")
def gateway(upstream: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_gateway(Path(tmp_path_factory.mktemp("gw-meta")), gateway_env(upstream))
    yield server  # WATCHLLM_KEY_CACHE_TTL=1
    server.stop()


def reads(gateway: Server) -> dict[str, float]:
    text = httpx.get(gateway.url + "/metrics", timeout=10).text
    return {m[0]: float(m[1]) for m in
            re.findall(r'^watchllm_metadata_reads_total\{cache="(\w+)"\} ([\d.e+]+)$', text,
                       re.MULTILINE)}


def grown(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: after.get(k, 0) - before.get(k, 0) for k in
            ("keys", "limits", "project_settings", "provider_keys")}


def test_expiry_under_concurrency_reads_once(gateway: Server) -> None:
    key = new_key(gateway, "metadata-herd")

    async def main() -> None:
        client = openai.AsyncOpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0)

        async def burst(n: int, tag: str) -> None:
            await asyncio.gather(*(client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": f"{tag} {i % 4}"}])
                for i in range(n)))

        await burst(4, "warm")
        await asyncio.sleep(1.2)  # every cached entry of this key expired; nothing reloaded
        before = reads(gateway)
        await burst(40, "herd")
        assert grown(before, reads(gateway)) == {"keys": 1, "limits": 1,
                                                 "project_settings": 1, "provider_keys": 1}

        # A key in use is read again in the background before it expires: about one read
        # per cache per TTL (here 1 s), however many requests there are.
        before = reads(gateway)
        end, sent = time.monotonic() + 2.5, 0
        while time.monotonic() < end:
            await burst(10, "steady")
            sent += 10
            await asyncio.sleep(0.02)
        growth = grown(before, reads(gateway))
        assert sent >= 100 and all(1 <= n <= 5 for n in growth.values()), (sent, growth)
        await client.close()

    asyncio.run(main())
