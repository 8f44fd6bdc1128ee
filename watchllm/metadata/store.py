"""Projects and API keys, written once against the SqlDatabase seam.

A key looks like ``wl_<id>_<secret>``. Only ``sha256(key)`` is stored; lookups go by the
public id and the hash is compared in constant time, so neither the database index nor
the comparison leaks how much of a guessed secret was right.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any

import orjson

from watchllm.env.base import Row, SqlDatabase
from watchllm.errors import InvalidRequestError, NotFoundError

SCOPES = ("proxy", "ingest", "analytics", "admin")
DEFAULT_SCOPES = ("proxy", "ingest", "analytics")
KEY_PREFIX = "wl_"
_KEY_RE = re.compile(r"^wl_([a-z0-9]{12})_([A-Za-z0-9_-]{20,})$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._-]{0,63}$")


def now_ms() -> int:
    return int(time.time() * 1000)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def parse_key(key: str) -> str | None:
    """The public key id of a well-formed key, else None."""
    m = _KEY_RE.match(key)
    return m.group(1) if m else None


@dataclass(frozen=True, slots=True)
class Project:
    id: str
    name: str
    settings: dict[str, Any]
    plan_id: str | None
    created_at: int

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "project",
            "name": self.name,
            "settings": self.settings,
            "plan_id": self.plan_id,
            "created_at": self.created_at,
        }


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: str
    project_id: str
    name: str
    prefix: str
    key_hash: str
    scopes: tuple[str, ...]
    allowed_models: tuple[str, ...] | None
    created_at: int
    expires_at: int | None
    revoked_at: int | None

    def active(self, at_ms: int) -> bool:
        return self.revoked_at is None and (self.expires_at is None or at_ms < self.expires_at)

    def matches(self, key: str) -> bool:
        return hmac.compare_digest(hash_key(key), self.key_hash)

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "api_key",
            "project_id": self.project_id,
            "name": self.name,
            "prefix": self.prefix,
            "scopes": list(self.scopes),
            "allowed_models": list(self.allowed_models) if self.allowed_models else None,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "revoked_at": self.revoked_at,
        }


def _project(row: Row) -> Project:
    return Project(
        row["id"], row["name"], orjson.loads(row["settings"]), row["plan_id"], row["created_at"]
    )


def _key(row: Row) -> ApiKey:
    allowed = row["allowed_models"]
    return ApiKey(
        id=row["id"],
        project_id=row["project_id"],
        name=row["name"],
        prefix=row["prefix"],
        key_hash=row["key_hash"],
        scopes=tuple(row["scopes"].split(",")) if row["scopes"] else (),
        allowed_models=tuple(orjson.loads(allowed)) if allowed else None,
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        revoked_at=row["revoked_at"],
    )


def _check_name(name: str, what: str) -> str:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise InvalidRequestError(
            f"{what} name must be 1-64 characters of letters, digits, space, '.', '_' or '-'",
            param="name",
        )
    return name


class MetadataStore:
    def __init__(self, db: SqlDatabase) -> None:
        self.db = db

    # -- projects ---------------------------------------------------------------
    async def create_project(
        self, name: str, settings: dict[str, Any] | None = None, project_id: str | None = None
    ) -> Project:
        _check_name(name, "project")
        if await self.db.fetch_one("SELECT id FROM projects WHERE name = ?", (name,)):
            raise InvalidRequestError(f"a project named {name!r} already exists", param="name")
        project = Project(
            project_id or "proj_" + secrets.token_hex(8), name, settings or {}, None, now_ms()
        )
        await self.db.execute(
            "INSERT INTO projects (id, name, settings, plan_id, created_at) VALUES (?, ?, ?, ?, ?)",
            (project.id, name, orjson.dumps(project.settings).decode(), None, project.created_at),
        )
        return project

    async def get_project(self, project_id: str) -> Project:
        row = await self.db.fetch_one("SELECT * FROM projects WHERE id = ?", (project_id,))
        if row is None:
            raise NotFoundError(f"no project with id {project_id!r}", param="project_id")
        return _project(row)

    async def find_project(self, name_or_id: str) -> Project:
        row = await self.db.fetch_one(
            "SELECT * FROM projects WHERE id = ? OR name = ?", (name_or_id, name_or_id)
        )
        if row is None:
            raise NotFoundError(f"no project named {name_or_id!r}", param="project")
        return _project(row)

    async def list_projects(self) -> list[Project]:
        rows = await self.db.fetch_all("SELECT * FROM projects ORDER BY created_at, id")
        return [_project(r) for r in rows]

    # -- keys -------------------------------------------------------------------
    async def create_key(
        self,
        project_id: str,
        name: str = "default",
        scopes: tuple[str, ...] = DEFAULT_SCOPES,
        expires_at: int | None = None,
        allowed_models: tuple[str, ...] | None = None,
    ) -> tuple[ApiKey, str]:
        """Create a key; returns the record and the plaintext key (shown once, never stored)."""
        await self.get_project(project_id)
        _check_name(name, "key")
        bad = [s for s in scopes if s not in SCOPES]
        if bad or not scopes:
            raise InvalidRequestError(
                f"unknown scopes {bad}; choose from {', '.join(SCOPES)}", param="scopes"
            )
        key_id = "".join(secrets.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(12))
        plaintext = f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
        record = ApiKey(
            id=key_id,
            project_id=project_id,
            name=name,
            prefix=plaintext[:10],
            key_hash=hash_key(plaintext),
            scopes=tuple(scopes),
            allowed_models=allowed_models,
            created_at=now_ms(),
            expires_at=expires_at,
            revoked_at=None,
        )
        await self.db.execute(
            "INSERT INTO api_keys (id, project_id, name, prefix, key_hash, scopes, allowed_models,"
            " created_at, expires_at, revoked_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                record.id,
                project_id,
                name,
                record.prefix,
                record.key_hash,
                ",".join(scopes),
                orjson.dumps(list(allowed_models)).decode() if allowed_models else None,
                record.created_at,
                expires_at,
                None,
            ),
        )
        return record, plaintext

    async def get_key(self, key_id: str) -> ApiKey | None:
        row = await self.db.fetch_one("SELECT * FROM api_keys WHERE id = ?", (key_id,))
        return _key(row) if row else None

    async def list_keys(self, project_id: str | None = None) -> list[ApiKey]:
        if project_id is None:
            rows = await self.db.fetch_all("SELECT * FROM api_keys ORDER BY created_at, id")
        else:
            rows = await self.db.fetch_all(
                "SELECT * FROM api_keys WHERE project_id = ? ORDER BY created_at, id", (project_id,)
            )
        return [_key(r) for r in rows]

    async def revoke_key(self, key_id: str) -> ApiKey:
        changed = await self.db.execute(
            "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
            (now_ms(), key_id),
        )
        key = await self.get_key(key_id)
        if key is None:
            raise NotFoundError(f"no key with id {key_id!r}", param="key_id")
        if not changed and key.revoked_at is None:
            raise NotFoundError(f"no key with id {key_id!r}", param="key_id")
        return key
