"""The gateway's main scenarios as a locust load profile.

    WATCHLLM_KEY=wl_... .venv/bin/locust -f bench/load/locustfile.py --host http://127.0.0.1:8080 \
        --headless -u 50 -r 50 -t 30s

Weights follow a typical mix: most calls are chat completions (a third of them repeats
that the cache answers), some stream, a few are embeddings. `bench/load/run.py` is the
overhead benchmark (fixed-rate, side by side with the upstream alone); this file is for
exploring mixes and concurrency levels against a running deployment.
"""

from __future__ import annotations

import os
import random
import uuid

from locust import FastHttpUser, between, task

KEY = os.environ.get("WATCHLLM_KEY", "")
MODEL = os.environ.get("WATCHLLM_MODEL", "gpt-4o-mini")
REPEATS = [f"Popular question number {i}" for i in range(20)]


class GatewayUser(FastHttpUser):
    wait_time = between(0, 0.01)

    def on_start(self) -> None:
        self.headers = {"authorization": f"Bearer {KEY}"}

    def _chat(self, content: str, stream: bool = False, name: str = "chat") -> None:
        body = {"model": MODEL, "stream": stream,
                "messages": [{"role": "user", "content": content}]}
        with self.client.post("/v1/chat/completions", json=body, headers=self.headers,
                              name=name, catch_response=True) as r:
            if r.status_code != 200:
                r.failure(f"HTTP {r.status_code}: {r.text[:200]}")
            elif stream and not r.text.rstrip().endswith("data: [DONE]"):
                r.failure("stream did not end with [DONE]")

    @task(6)
    def chat_unique(self) -> None:
        self._chat(f"Question {uuid.uuid4().hex}", name="chat (miss)")

    @task(3)
    def chat_repeat(self) -> None:
        self._chat(random.choice(REPEATS), name="chat (cache)")

    @task(2)
    def chat_stream(self) -> None:
        self._chat(f"Stream {uuid.uuid4().hex}", stream=True, name="chat (stream)")

    @task(1)
    def embeddings(self) -> None:
        body = {"model": "text-embedding-3-small", "input": [uuid.uuid4().hex, "shared text"]}
        self.client.post("/v1/embeddings", json=body, headers=self.headers, name="embeddings")
