"""`watchllm.entrypoints.asgi:app` — what granian (or any ASGI server) serves.

Settings are read once per worker process at import; an invalid one stops the worker
with a message naming it.
"""

from __future__ import annotations

from watchllm.app import Gateway
from watchllm.entrypoints.factory import build_env
from watchllm.settings import load_settings

app = Gateway(load_settings(), build_env)
