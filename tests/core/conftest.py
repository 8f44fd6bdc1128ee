"""Fixtures for the core tests: both backends, and a client on the session's chDB engine."""

from __future__ import annotations

from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest

from watchllm import _twins


@pytest.fixture(scope="session")
def rust() -> ModuleType:
    """The Rust extension (skips the test when it is not built)."""
    module: ModuleType = pytest.importorskip(
        "watchllm._core", reason="extension not built (maturin develop)"
    )
    return module


@pytest.fixture(scope="session")
def twin() -> ModuleType:
    return _twins


@pytest.fixture(scope="session")
def chdb_client(chdb_url: str) -> Iterator[Any]:
    """A client on the process's one chDB engine (`chdb_url`, tests/conftest.py)."""
    clickhouse_connect = pytest.importorskip("clickhouse_connect")
    client = clickhouse_connect.get_client(dsn=chdb_url)
    yield client
    client.close()
