"""Fixtures for the core tests: both backends, and a lazy session-wide chDB client."""

from __future__ import annotations

import tempfile
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
def chdb_client() -> Iterator[Any]:
    """One chDB data directory per process: opened on first use, for the whole session."""
    clickhouse_connect = pytest.importorskip("clickhouse_connect")
    pytest.importorskip("chdb")
    with tempfile.TemporaryDirectory(prefix="watchllm-core-chdb-") as path:
        client = clickhouse_connect.get_client(dsn=f"chdb://{path}")
        yield client
        client.close()
