"""Test stand-in for the Workers runtime's entry-point helper module.

The real one patches `ctx.waitUntil` to accept Python awaitables and imports JS modules
of the runtime. The adapters hand `waitUntil` a JS Promise already, so nothing to patch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Generator
from typing import Any

import js  # type: ignore[import-not-found]

cloudflareWorkersModule: Any = None
cloudflareSocketsModule: Any = None


def doAnImport(module_name: str) -> Any:
    return getattr(js, module_name, None)


@contextlib.contextmanager
def patch_env_helper(kwds: Any) -> Generator[None]:
    yield


def patchWaitUntil(ctx: Any) -> None:
    return None
