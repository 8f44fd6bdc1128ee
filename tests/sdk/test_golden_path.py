"""End to end: a real gateway subprocess (embedded: chDB under its own data dir, the
durable pipeline), the SDK sending one event of every type, the analytics API returning
exactly what was sent — scripts/golden_path.py, as users run it."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path

import pytest

from watchllm.testing.servers import Server, start_gateway

ADMIN = "golden-admin"
SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "golden_path.py"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    pytest.importorskip("chdb")
    server = start_gateway(tmp_path_factory.mktemp("golden"), {
        "WATCHLLM_ADMIN_KEY": ADMIN, "WATCHLLM_EVENTS_FLUSH_MS": "100",
        "WATCHLLM_DEFAULT_PROVIDER": "mock"})
    yield server
    server.stop()


def test_golden_path(gateway: Server, capsys: pytest.CaptureFixture[str]) -> None:
    spec = importlib.util.spec_from_file_location("golden_path", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    code = module.main(["--base-url", gateway.url, "--admin-key", ADMIN, "--timeout", "30"])
    out = capsys.readouterr().out
    assert code == 0, out + gateway.output()[-3000:]
    assert "golden path: OK" in out
