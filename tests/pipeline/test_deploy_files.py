"""The committed files under deploy/ are what the schema sources render (`make migrations`)."""

from __future__ import annotations

from pathlib import Path

from watchllm.events.clickhouse_schema import render
from watchllm.metadata.export import rendered, stale

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def test_deploy_files_are_in_sync() -> None:
    assert stale(DEPLOY) == [], "run `make migrations` and commit deploy/"


def test_every_dialect_and_clickhouse_are_exported() -> None:
    dirs = {p.parent.relative_to(DEPLOY).as_posix() for p in rendered(DEPLOY)}
    assert dirs == {"postgres", "sqlite", "cloudflare/migrations", "clickhouse"}
    assert (DEPLOY / "clickhouse" / "schema.sql").read_text() == render()


def test_stale_notices_an_edit(tmp_path: Path) -> None:
    from watchllm.metadata.export import write

    write(tmp_path)
    assert stale(tmp_path) == []
    target = next(iter(rendered(tmp_path)))
    target.write_text(target.read_text() + "-- edited by hand\n")
    assert stale(tmp_path) == [target]
