"""Apply the metadata migrations to any SqlDatabase, idempotently."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from watchllm.env.base import SqlDatabase
from watchllm.errors import ServiceUnavailableError
from watchllm.metadata.schema import LATEST_VERSION, MIGRATIONS, VERSIONS_TABLE, migration_sql


async def current_version(db: SqlDatabase) -> int:
    await db.execute(VERSIONS_TABLE)
    row = await db.fetch_one("SELECT MAX(version) AS v FROM schema_migrations")
    return int(row["v"]) if row and row["v"] is not None else 0


async def migrate(db: SqlDatabase) -> list[int]:
    """Apply pending migrations, each in one transaction; return the versions applied."""
    applied = []
    version = await current_version(db)
    for m in MIGRATIONS:
        if m.version <= version:
            continue
        statements: list[tuple[str, Sequence[Any]]] = [
            (sql, ()) for sql in migration_sql(m, db.dialect)
        ]
        statements.append(
            (
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                (m.version, m.name, int(time.time() * 1000)),
            )
        )
        await db.transaction(statements)
        applied.append(m.version)
    return applied


async def require_current(db: SqlDatabase) -> None:
    """Refuse to serve on a schema that is behind (clear message, not a failing query later)."""
    version = await current_version(db)
    if version < LATEST_VERSION:
        raise ServiceUnavailableError(
            f"metadata schema is at version {version}, this WatchLLM needs {LATEST_VERSION}: "
            "run `watchllm migrate` (or set WATCHLLM_AUTO_MIGRATE=true)"
        )
