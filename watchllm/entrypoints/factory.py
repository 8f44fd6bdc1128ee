"""Pick the Env for the configured mode (embedded or self-hosted)."""

from __future__ import annotations

from watchllm.env.base import Env, SqlDatabase
from watchllm.settings import Settings


async def build_env(settings: Settings) -> Env:
    if settings.mode == "self_hosted":
        from watchllm.env.selfhosted import build_env as build_selfhosted

        return await build_selfhosted(settings)
    if settings.mode == "cloudflare":
        raise SystemExit("WATCHLLM_MODE=cloudflare runs only inside the Worker entry point")
    from watchllm.env.embedded import build_env as build_embedded

    return await build_embedded(settings)


async def open_database(settings: Settings) -> SqlDatabase:
    """Only the metadata database (CLI commands that manage projects and keys)."""
    if settings.database_url.startswith(("postgres://", "postgresql://")):
        from watchllm.env.selfhosted.postgres import PostgresDatabase

        return await PostgresDatabase.connect(settings.database_url)
    from watchllm.env.embedded import sqlite_path
    from watchllm.env.embedded.sqlite import SqliteDatabase

    return SqliteDatabase(sqlite_path(settings))
