"""`watchllm plans ...` through the CLI entry point, on the embedded SQLite store: the same
PlanStore the admin API uses, so the gateway's limits see what the CLI wrote."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from watchllm.entrypoints.cli import main
from watchllm.entrypoints.factory import open_database
from watchllm.limits import LimitsService, Scope
from watchllm.metadata.plans import PlanStore
from watchllm.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("WATCHLLM_DATA_DIR", str(tmp_path))
    for name in ("WATCHLLM_DATABASE_URL", "WATCHLLM_MODE"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    main(list(argv))
    return capsys.readouterr().out


def test_plans_create_list_show_update_assign_delete(
        data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    project_id = cli(capsys, "projects", "create", "acme").strip()
    created = orjson.loads(cli(capsys, "plans", "create", "pro", "--limits",
                               '{"rpm": 600, "key": {"rpm": 60}, "budget_usd": 100}'))
    assert created["name"] == "pro" and created["limits"]["rpm"] == 600
    assert created["id"].startswith("plan_")
    listing = cli(capsys, "plans", "list")
    assert "pro" in listing and created["id"] in listing and '"rpm":600' in listing
    assert orjson.loads(cli(capsys, "plans", "show", "pro")) == created  # by name or id

    limits_file = data_dir / "limits.json"
    limits_file.write_text('{"rpm": 1200, "key": {"rpm": 120}, "period": "day"}')
    updated = orjson.loads(cli(capsys, "plans", "update", created["id"], "--name", "pro2",
                               "--limits", f"@{limits_file}"))
    assert updated["name"] == "pro2" and updated["limits"]["period"] == "day"
    assigned = cli(capsys, "plans", "assign", "pro2", "--project", "acme").strip()
    assert assigned == f"project {project_id}: plan {created['id']}"

    # What the gateway reads for this project (LimitsService over the same store).
    async def gateway_view() -> Any:
        settings = load_settings()
        db = await open_database(settings)
        try:
            svc = LimitsService(object(), settings, PlanStore(db, settings))  # type: ignore[arg-type]
            return await svc.limits_for(project_id, "some-key")
        finally:
            await db.close()

    limits = asyncio.run(gateway_view())
    assert limits.project == Scope(rpm=1200) and limits.key == Scope(rpm=120)
    assert limits.period == "day"

    with pytest.raises(SystemExit, match="used by 1 project"):  # in use: refused
        main(["plans", "delete", "pro2"])
    cli(capsys, "plans", "assign", "none", "--project", project_id)
    assert cli(capsys, "plans", "delete", "pro2").strip() == f"deleted {created['id']}"
    assert "pro2" not in cli(capsys, "plans", "list")


def test_invalid_input_is_a_clean_error(data_dir: Path) -> None:
    with pytest.raises(SystemExit, match="unknown plan fields"):
        main(["plans", "create", "bad", "--limits", '{"rpn": 5}'])
    with pytest.raises(SystemExit, match="not valid JSON"):
        main(["plans", "create", "bad", "--limits", "{rpm: 5}"])
    with pytest.raises(SystemExit, match="no plan"):
        main(["plans", "show", "missing"])
    with pytest.raises(SystemExit, match="no project"):
        main(["plans", "assign", "none", "--project", "missing"])


def test_plans_through_the_installed_command_line(data_dir: Path) -> None:
    """The real entry point in a subprocess (python -m watchllm.entrypoints.cli)."""
    env = {**os.environ, "WATCHLLM_DATA_DIR": str(data_dir), "PYTHONPATH": str(ROOT)}

    def run(*argv: str) -> str:
        done = subprocess.run([sys.executable, "-m", "watchllm.entrypoints.cli", *argv],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout

    run("plans", "create", "free", "--limits", '{"rpm": 3}')
    assert orjson.loads(run("plans", "show", "free"))["limits"] == {"rpm": 3}
