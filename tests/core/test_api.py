"""The public surface of watchllm.core and the backend switch."""

from __future__ import annotations

import os
import subprocess
import sys
import zlib
from types import ModuleType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from watchllm import _twins, core

API = {
    "CoreError",
    "HeldRates",
    "HeldSlot",
    "RateGrant",
    "RatePlan",
    "RateTable",
    "RequestTally",
    "RowBinaryError",
    "VectorIndex",
    "cache_key",
    "context_key",
    "count_chat_tokens",
    "count_tokens",
    "crc32",
    "embed_text",
    "encode_rowbinary",
    "encoding_for_model",
    "stream_usage",
}


def test_exported_members() -> None:
    assert set(core.__all__) == {*API, "BACKEND"}
    assert set(_twins.__all__) == {*API, "__version__"}
    assert core.BACKEND in ("rust", "python")
    assert issubclass(core.RowBinaryError, core.CoreError)
    assert issubclass(core.CoreError, ValueError)


def test_extension_has_the_same_api(rust: ModuleType) -> None:
    public = {n for n in dir(rust) if not n.startswith("_")}
    assert public == API
    assert core.BACKEND == "rust" or os.environ.get("WATCHLLM_CORE") == "python"


def backend_in_subprocess(env_value: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "WATCHLLM_CORE"}
    if env_value is not None:
        env["WATCHLLM_CORE"] = env_value
    code = "from watchllm import core; print(core.BACKEND, core.cache_key.__module__)"
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout.strip()


def test_env_var_forces_the_twins(rust: ModuleType) -> None:
    assert backend_in_subprocess("python") == "python watchllm._twins._cache_key"
    assert backend_in_subprocess(None).startswith("rust")


def test_rowbinary_error_attributes(rust: ModuleType) -> None:
    for mod in (rust, _twins):
        with pytest.raises(mod.RowBinaryError) as info:
            mod.encode_rowbinary([("a", "UInt8")], [{"a": 1}, {"a": -1}])
        assert info.value.row == 1
        assert info.value.column == "a"
        assert str(info.value) == "row 1, column 'a': -1 is out of range for UInt8"


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=5_000), value=st.integers(0, 2**32 - 1),
       cut=st.integers(0, 5_000))
def test_crc32_twin_equals_rust(rust: ModuleType, data: bytes, value: int, cut: int) -> None:
    """zlib's CRC-32, from any starting value, and chained over two pieces (the spool
    checksums its header, then the payload, so); the large buffer releases the GIL."""
    assert rust.crc32(data, value) == _twins.crc32(data, value) == zlib.crc32(data, value)
    head, tail = data[:cut], data[cut:]
    assert rust.crc32(tail, rust.crc32(head)) == zlib.crc32(data)
    big = data * (20_000 // max(len(data), 1) + 1)
    assert rust.crc32(big) == zlib.crc32(big)
