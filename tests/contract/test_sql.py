"""SqlDatabase contract: SQLite (embedded) and PostgreSQL (self-hosted) behave the same."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from watchllm.metadata.migrate import current_version, migrate
from watchllm.metadata.schema import LATEST_VERSION
from watchllm.metadata.store import MetadataStore

TABLE = "CREATE TABLE t (id TEXT PRIMARY KEY, n BIGINT NOT NULL, note TEXT)"


async def test_placeholders_rows_and_counts(sql_db: Any) -> None:
    await sql_db.execute(TABLE)
    assert await sql_db.execute("INSERT INTO t (id, n, note) VALUES (?, ?, ?)", ("a", 1, None)) == 1
    await sql_db.execute("INSERT INTO t (id, n, note) VALUES (?, ?, ?)", ("b", 2, "x?y"))
    # a '?' inside a literal is not a placeholder
    rows = await sql_db.fetch_all("SELECT id, n, note FROM t WHERE note = 'x?y' OR n = ? "
                                  "ORDER BY id", (1,))
    assert rows == [{"id": "a", "n": 1, "note": None}, {"id": "b", "n": 2, "note": "x?y"}]
    assert await sql_db.execute("UPDATE t SET n = n + ? WHERE n >= ?", (10, 1)) == 2
    assert await sql_db.fetch_one("SELECT n FROM t WHERE id = ?", ("b",)) == {"n": 12}
    assert await sql_db.fetch_one("SELECT n FROM t WHERE id = ?", ("zz",)) is None
    assert await sql_db.execute("DELETE FROM t WHERE id = ?", ("a",)) == 1
    assert await sql_db.execute("DELETE FROM t WHERE id = ?", ("a",)) == 0


async def test_transaction_is_all_or_nothing(sql_db: Any) -> None:
    await sql_db.execute(TABLE)
    await sql_db.transaction([
        ("INSERT INTO t (id, n) VALUES (?, ?)", ("a", 1)),
        ("INSERT INTO t (id, n) VALUES (?, ?)", ("b", 2)),
    ])
    with pytest.raises(Exception):  # noqa: B017 - each driver raises its own error type
        await sql_db.transaction([
            ("INSERT INTO t (id, n) VALUES (?, ?)", ("c", 3)),
            ("INSERT INTO t (id, n) VALUES (?, ?)", ("a", 9)),  # duplicate key
        ])
    rows = await sql_db.fetch_all("SELECT id FROM t ORDER BY id")
    assert [r["id"] for r in rows] == ["a", "b"]


async def test_concurrent_statements(sql_db: Any) -> None:
    await sql_db.execute(TABLE)
    await asyncio.gather(*(
        sql_db.execute("INSERT INTO t (id, n) VALUES (?, ?)", (f"k{i}", i)) for i in range(50)
    ))
    assert await sql_db.fetch_one("SELECT COUNT(*) AS c, SUM(n) AS s FROM t") == {
        "c": 50, "s": sum(range(50))}


async def test_migrations_are_idempotent_and_the_store_works(sql_db: Any) -> None:
    assert await migrate(sql_db) == list(range(1, LATEST_VERSION + 1))
    assert await migrate(sql_db) == []
    assert await current_version(sql_db) == LATEST_VERSION
    store = MetadataStore(sql_db)
    project = await store.create_project("acme")
    key, plaintext = await store.create_key(project.id, "ci")
    got = await store.get_key(key.id)
    assert got is not None and got.matches(plaintext) and got.scopes == key.scopes
    revoked = await store.revoke_key(key.id)
    assert revoked.revoked_at is not None
    assert [p.name for p in await store.list_projects()] == ["acme"]
