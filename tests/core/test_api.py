"""The public surface of watchllm.core and the backend switch."""

from __future__ import annotations

import os
import subprocess
import sys
from types import ModuleType

import pytest

from watchllm import _twins, core

API = {
    "CoreError",
    "HeldRates",
    "HeldSlot",
    "RateGrant",
    "RatePlan",
    "RateTable",
    "RowBinaryError",
    "VectorIndex",
    "cache_key",
    "context_key",
    "count_chat_tokens",
    "count_tokens",
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
