"""The generated migration files (deploy/) migrate a fresh database to exactly the state
`watchllm migrate` produces, and say so in schema_migrations."""

from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path

import pytest

from watchllm.env.embedded.sqlite import SqliteDatabase
from watchllm.metadata.migrate import current_version, migrate
from watchllm.metadata.schema import LATEST_VERSION

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def _files(folder: str) -> list[Path]:
    files = sorted((DEPLOY / folder).glob("*.sql"))
    assert len(files) == LATEST_VERSION
    return files


@pytest.mark.parametrize("folder", ["sqlite", "cloudflare/migrations"])
async def test_sqlite_and_d1_files(tmp_path: Path, folder: str) -> None:
    path = tmp_path / "m.db"
    with sqlite3.connect(path) as conn:
        for f in _files(folder):
            conn.executescript(f.read_text())
    db = SqliteDatabase(path)
    assert await current_version(db) == LATEST_VERSION
    assert await migrate(db) == []
    rows = await db.fetch_all("SELECT version, applied_at FROM schema_migrations")
    assert [r["version"] for r in rows] == list(range(1, LATEST_VERSION + 1))
    assert all(r["applied_at"] > 1_700_000_000_000 for r in rows)  # milliseconds, now-ish
    await db.close()


async def test_postgres_files() -> None:
    asyncpg = pytest.importorskip("asyncpg")
    from watchllm.env.selfhosted.postgres import PostgresDatabase

    name = f"mig_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect("postgresql://postgres@127.0.0.1:5432/postgres")
    await admin.execute(f"CREATE DATABASE {name}")
    try:
        conn = await asyncpg.connect(f"postgresql://postgres@127.0.0.1:5432/{name}")
        for f in _files("postgres"):
            await conn.execute(f.read_text())
        await conn.close()
        db = await PostgresDatabase.connect(f"postgresql://postgres@127.0.0.1:5432/{name}")
        assert await current_version(db) == LATEST_VERSION
        assert await migrate(db) == []
        await db.close()
    finally:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.close()
