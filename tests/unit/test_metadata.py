from __future__ import annotations

from pathlib import Path

import pytest

from watchllm.auth import Authenticator
from watchllm.env.embedded.sqlite import SqliteDatabase
from watchllm.errors import AuthenticationError, InvalidRequestError, PermissionDeniedError
from watchllm.metadata.migrate import current_version, migrate
from watchllm.metadata.schema import LATEST_VERSION
from watchllm.metadata.store import MetadataStore, hash_key
from watchllm.settings import load_settings


async def test_migrate_is_idempotent(tmp_path: Path) -> None:
    db = SqliteDatabase(tmp_path / "m.db")
    assert await migrate(db) == list(range(1, LATEST_VERSION + 1))
    assert await migrate(db) == []
    assert await current_version(db) == LATEST_VERSION
    await db.close()


async def test_keys_hashed_and_authenticated(tmp_path: Path) -> None:
    db = SqliteDatabase(tmp_path / "k.db")
    await migrate(db)
    store = MetadataStore(db)
    project = await store.create_project("app")
    with pytest.raises(InvalidRequestError):
        await store.create_project("app")
    record, key = await store.create_key(project.id, "ci", ("proxy",))
    rows = await db.fetch_all("SELECT * FROM api_keys")
    assert key not in str(rows) and rows[0]["key_hash"] == hash_key(key)
    auth = Authenticator(store, load_settings({"WATCHLLM_KEY_CACHE_TTL": "0"}, None))
    principal = await auth.authenticate(key, "proxy")
    assert (principal.project_id, principal.key_id) == (project.id, record.id)
    with pytest.raises(PermissionDeniedError):
        await auth.authenticate(key, "ingest")
    with pytest.raises(AuthenticationError):
        await auth.authenticate(key[:-1] + ("A" if key[-1] != "A" else "B"), "proxy")
    await store.revoke_key(record.id)
    with pytest.raises(AuthenticationError, match="revoked"):
        await auth.authenticate(key, "proxy")
    await db.close()
