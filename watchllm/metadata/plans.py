"""Plans, per-key limits, project updates and encrypted provider keys, on SqlDatabase.

Provider keys are sealed with AES-256-GCM under `WATCHLLM_MASTER_KEY` (32 random bytes,
base64): a fresh 96-bit nonce per seal, and the row's (id, project, provider) as
associated data, so a ciphertext copied into another row or project does not open.
Rotation: put the new key in WATCHLLM_MASTER_KEY and the old one in
WATCHLLM_MASTER_KEY_PREVIOUS, then `POST /v1/admin/provider-keys/rotate` re-seals every
row under the new key; afterwards drop the old one (docs/limits.md).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import os
import secrets
from dataclasses import dataclass
from typing import Any

import orjson

from watchllm.env.base import Row, SqlDatabase
from watchllm.errors import InvalidRequestError, NotFoundError, ServiceUnavailableError
from watchllm.limits.plan import parse_limits, parse_scope
from watchllm.metadata.store import _check_name, now_ms
from watchllm.settings import Settings

_PROVIDER_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789-_")


_KEYGEN = "python -c 'import os,base64;print(base64.b64encode(os.urandom(32)).decode())'"


def _decode_key(text: str) -> bytes:
    """32 bytes from base64 (standard or url-safe) or hex; ValueError naming the variable."""
    candidates = []
    with contextlib.suppress(ValueError):
        candidates.append(bytes.fromhex(text))
    for decode in (base64.b64decode, base64.urlsafe_b64decode):
        with contextlib.suppress(binascii.Error, ValueError):
            candidates.append(decode(text + "=" * (-len(text) % 4)))
    for raw in candidates:
        if len(raw) == 32:
            return raw
    raise ValueError(f"WATCHLLM_MASTER_KEY must be 32 bytes in base64 or hex; make one: {_KEYGEN}")


class KeyRing:
    """The current master key (seals) and previous ones (open only, during rotation)."""

    def __init__(self, current: str, previous: tuple[str, ...] = ()) -> None:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        self._keys: dict[str, AESGCM] = {}
        self.current = ""
        for i, text in enumerate((current, *previous)):
            if not text:
                continue
            raw = _decode_key(text)
            key_id = hashlib.sha256(raw).hexdigest()[:12]
            self._keys[key_id] = AESGCM(raw)
            if i == 0:
                self.current = key_id

    def seal(self, plaintext: str, aad: bytes) -> tuple[str, str]:
        if not self.current:
            raise ServiceUnavailableError(
                "Provider keys need WATCHLLM_MASTER_KEY (32 bytes, base64) to be encrypted.",
                code="master_key_missing")
        nonce = os.urandom(12)
        sealed = self._keys[self.current].encrypt(nonce, plaintext.encode(), aad)
        return base64.b64encode(nonce + sealed).decode(), self.current

    def open(self, ciphertext: str, key_id: str, aad: bytes) -> str:
        aead = self._keys.get(key_id)
        if aead is None:
            raise ServiceUnavailableError(
                f"provider key sealed by master key {key_id}, which is not configured "
                "(WATCHLLM_MASTER_KEY / WATCHLLM_MASTER_KEY_PREVIOUS)", code="master_key_missing")
        from cryptography.exceptions import InvalidTag

        raw = base64.b64decode(ciphertext)
        try:
            return aead.decrypt(raw[:12], raw[12:], aad).decode()
        except InvalidTag:  # altered, or copied from another row/project
            raise ServiceUnavailableError(
                "a stored provider key failed its integrity check (altered or moved)",
                code="provider_key_unreadable") from None


@dataclass(frozen=True, slots=True)
class Plan:
    id: str
    name: str
    limits: dict[str, Any]
    created_at: int
    updated_at: int

    def public(self) -> dict[str, Any]:
        return {"id": self.id, "object": "plan", "name": self.name, "limits": self.limits,
                "created_at": self.created_at, "updated_at": self.updated_at}


def _plan(row: Row) -> Plan:
    return Plan(row["id"], row["name"], orjson.loads(row["limits"]), row["created_at"],
                row["updated_at"])


def _provider_public(row: Row) -> dict[str, Any]:
    return {"id": row["id"], "object": "provider_key", "project_id": row["project_id"],
            "provider": row["provider"], "hint": row["hint"], "master_key_id": row["key_id"],
            "created_at": row["created_at"], "updated_at": row["updated_at"]}


def _aad(row_id: str, project_id: str, provider: str) -> bytes:
    return f"{row_id}|{project_id}|{provider}".encode()


class PlanStore:
    """Also the `PlanSource` of `watchllm.limits.LimitsService`."""

    def __init__(self, db: SqlDatabase, settings: Settings | None = None) -> None:
        self.db = db
        self._settings = settings
        self._ring: KeyRing | None = None

    @property
    def ring(self) -> KeyRing:
        if self._ring is None:
            s = self._settings
            self._ring = KeyRing(s.master_key if s else "", s.master_key_previous if s else ())
        return self._ring

    # -- plans ----------------------------------------------------------------------------
    async def create_plan(self, name: str, limits: dict[str, Any]) -> Plan:
        _check_name(name, "plan")
        parse_limits(limits)
        if await self.db.fetch_one("SELECT id FROM plans WHERE name = ?", (name,)):
            raise InvalidRequestError(f"a plan named {name!r} already exists", param="name")
        now = now_ms()
        plan = Plan("plan_" + secrets.token_hex(8), name, limits, now, now)
        await self.db.execute(
            "INSERT INTO plans (id, name, limits, created_at, updated_at) VALUES (?, ?, ?, ?, ?)",
            (plan.id, name, orjson.dumps(limits).decode(), now, now))
        return plan

    async def get_plan(self, plan_id: str) -> Plan:
        row = await self.db.fetch_one("SELECT * FROM plans WHERE id = ? OR name = ?",
                                      (plan_id, plan_id))
        if row is None:
            raise NotFoundError(f"no plan with id {plan_id!r}", param="plan_id")
        return _plan(row)

    async def list_plans(self) -> list[Plan]:
        return [_plan(r) for r in await self.db.fetch_all(
            "SELECT * FROM plans ORDER BY created_at, id")]

    async def update_plan(self, plan_id: str, name: str | None = None,
                          limits: dict[str, Any] | None = None) -> Plan:
        plan = await self.get_plan(plan_id)
        if name is not None and name != plan.name:
            _check_name(name, "plan")
            if await self.db.fetch_one("SELECT id FROM plans WHERE name = ?", (name,)):
                raise InvalidRequestError(f"a plan named {name!r} already exists", param="name")
        if limits is not None:
            parse_limits(limits)
        await self.db.execute(
            "UPDATE plans SET name = ?, limits = ?, updated_at = ? WHERE id = ?",
            (name or plan.name, orjson.dumps(plan.limits if limits is None else limits).decode(),
             now_ms(), plan.id))
        return await self.get_plan(plan.id)

    async def delete_plan(self, plan_id: str) -> None:
        plan = await self.get_plan(plan_id)
        users = await self.db.fetch_one(
            "SELECT COUNT(*) AS n FROM projects WHERE plan_id = ?", (plan.id,))
        if users and users["n"]:
            raise InvalidRequestError(f"plan {plan.name!r} is used by {users['n']} project(s); "
                                      "move them to another plan first", param="plan_id")
        await self.db.execute("DELETE FROM plans WHERE id = ?", (plan.id,))

    # -- the PlanSource of LimitsService ---------------------------------------------------
    async def project_limits(self, project_id: str) -> dict[str, Any] | None:
        row = await self.db.fetch_one(
            "SELECT plans.limits AS limits FROM projects JOIN plans ON plans.id = "
            "projects.plan_id WHERE projects.id = ?", (project_id,))
        return orjson.loads(row["limits"]) if row else None

    async def key_limits(self, key_id: str) -> dict[str, Any] | None:
        row = await self.db.fetch_one("SELECT limits FROM api_keys WHERE id = ?", (key_id,))
        return orjson.loads(row["limits"]) if row and row["limits"] else None

    async def set_key_limits(self, key_id: str, limits: dict[str, Any] | None) -> None:
        if limits is not None:
            parse_scope(limits, "limits.")
        changed = await self.db.execute(
            "UPDATE api_keys SET limits = ? WHERE id = ?",
            (orjson.dumps(limits).decode() if limits else None, key_id))
        if not changed:
            raise NotFoundError(f"no key with id {key_id!r}", param="key_id")

    # -- projects ---------------------------------------------------------------------------
    async def update_project(self, project_id: str, fields: dict[str, Any]) -> None:
        """Change name / settings / plan_id (null detaches the plan)."""
        row = await self.db.fetch_one("SELECT * FROM projects WHERE id = ?", (project_id,))
        if row is None:
            raise NotFoundError(f"no project with id {project_id!r}", param="project_id")
        name, settings, plan_id = row["name"], row["settings"], row["plan_id"]
        if "name" in fields and fields["name"] != name:
            name = _check_name(fields["name"], "project")
            if await self.db.fetch_one("SELECT id FROM projects WHERE name = ?", (name,)):
                raise InvalidRequestError(f"a project named {name!r} already exists",
                                          param="name")
        if "settings" in fields:
            if not isinstance(fields["settings"], dict):
                raise InvalidRequestError("'settings' must be an object", param="settings")
            settings = orjson.dumps(fields["settings"]).decode()
        if "plan_id" in fields:
            plan_id = fields["plan_id"]
            if plan_id is not None:
                if not isinstance(plan_id, str):
                    raise InvalidRequestError("'plan_id' must be a string or null",
                                              param="plan_id")
                plan_id = (await self.get_plan(plan_id)).id
        await self.db.execute(
            "UPDATE projects SET name = ?, settings = ?, plan_id = ? WHERE id = ?",
            (name, settings, plan_id, project_id))

    async def delete_project(self, project_id: str) -> list[str]:
        """Delete a project with its keys and provider keys; returns the deleted key ids."""
        if not await self.db.fetch_one("SELECT id FROM projects WHERE id = ?", (project_id,)):
            raise NotFoundError(f"no project with id {project_id!r}", param="project_id")
        keys = await self.db.fetch_all("SELECT id FROM api_keys WHERE project_id = ?",
                                       (project_id,))
        await self.db.transaction([
            ("DELETE FROM api_keys WHERE project_id = ?", (project_id,)),
            ("DELETE FROM provider_keys WHERE project_id = ?", (project_id,)),
            ("DELETE FROM projects WHERE id = ?", (project_id,)),
        ])
        return [k["id"] for k in keys]

    # -- provider keys ------------------------------------------------------------------------
    async def put_provider_key(self, project_id: str, provider: str, secret: str) -> dict[str, Any]:
        """Store (or replace) the project's key for `provider`; returns it without the secret."""
        if not await self.db.fetch_one("SELECT id FROM projects WHERE id = ?", (project_id,)):
            raise NotFoundError(f"no project with id {project_id!r}", param="project_id")
        if not provider or not set(provider) <= _PROVIDER_CHARS or len(provider) > 64:
            raise InvalidRequestError("'provider' must be a provider name (a-z, 0-9, -, _)",
                                      param="provider")
        if not isinstance(secret, str) or not secret.strip():
            raise InvalidRequestError("'key' is required", param="key")
        existing = await self.db.fetch_one(
            "SELECT id FROM provider_keys WHERE project_id = ? AND provider = ?",
            (project_id, provider))
        row_id = existing["id"] if existing else "pk_" + secrets.token_hex(8)
        sealed, key_id = self.ring.seal(secret, _aad(row_id, project_id, provider))
        hint = "..." + secret[-4:] if len(secret) >= 12 else "..."
        now = now_ms()
        if existing:
            await self.db.execute(
                "UPDATE provider_keys SET ciphertext = ?, key_id = ?, hint = ?, updated_at = ? "
                "WHERE id = ?", (sealed, key_id, hint, now, row_id))
        else:
            await self.db.execute(
                "INSERT INTO provider_keys (id, project_id, provider, ciphertext, key_id, hint, "
                "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (row_id, project_id, provider, sealed, key_id, hint, now, now))
        row = await self.db.fetch_one("SELECT * FROM provider_keys WHERE id = ?", (row_id,))
        assert row is not None
        return _provider_public(row)

    async def list_provider_keys(self, project_id: str) -> list[dict[str, Any]]:
        rows = await self.db.fetch_all(
            "SELECT * FROM provider_keys WHERE project_id = ? ORDER BY provider", (project_id,))
        return [_provider_public(r) for r in rows]

    async def get_provider_key(self, project_id: str, provider: str) -> str | None:
        """The plaintext key (for the outbound call), None when the project has none."""
        row = await self.db.fetch_one(
            "SELECT * FROM provider_keys WHERE project_id = ? AND provider = ?",
            (project_id, provider))
        if row is None:
            return None
        return self.ring.open(row["ciphertext"], row["key_id"],
                              _aad(row["id"], project_id, provider))

    async def delete_provider_key(self, project_id: str, provider: str) -> None:
        changed = await self.db.execute(
            "DELETE FROM provider_keys WHERE project_id = ? AND provider = ?",
            (project_id, provider))
        if not changed:
            raise NotFoundError(f"project {project_id!r} has no {provider!r} key",
                                param="provider")

    async def rotate_provider_keys(self) -> int:
        """Re-seal every key not sealed by the current master key; returns how many."""
        current = self.ring.current
        if not current:
            raise ServiceUnavailableError("rotation needs WATCHLLM_MASTER_KEY",
                                          code="master_key_missing")
        rows = await self.db.fetch_all("SELECT * FROM provider_keys WHERE key_id <> ?",
                                       (current,))
        statements: list[tuple[str, tuple[Any, ...]]] = []
        for row in rows:
            aad = _aad(row["id"], row["project_id"], row["provider"])
            plaintext = self.ring.open(row["ciphertext"], row["key_id"], aad)
            sealed, key_id = self.ring.seal(plaintext, aad)
            statements.append(("UPDATE provider_keys SET ciphertext = ?, key_id = ?, "
                               "updated_at = ? WHERE id = ?", (sealed, key_id, now_ms(),
                                                               row["id"])))
        if statements:
            await self.db.transaction(statements)
        return len(statements)
