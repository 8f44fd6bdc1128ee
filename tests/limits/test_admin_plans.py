"""Plans, project update/delete, per-key limits and encrypted provider keys, through the
ASGI app with admin_plans' routes merged in the way app.py will merge them."""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

import orjson
import pytest

from watchllm.app import Gateway
from watchllm.env.embedded import build_env
from watchllm.errors import ServiceUnavailableError
from watchllm.limits import LimitsService
from watchllm.metadata.plans import KeyRing, PlanStore
from watchllm.settings import load_settings

ADMIN = "admin-secret"


def _key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


async def call(gw: Gateway, method: str, path: str, body: Any = None,
               token: str = ADMIN) -> tuple[int, Any]:
    raw = orjson.dumps(body) if body is not None else b""
    scope = {"type": "http", "method": method, "path": path, "query_string": b"",
             "headers": [(b"authorization", f"Bearer {token}".encode()),
                         (b"content-length", str(len(raw)).encode())]}
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": raw, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await gw(scope, receive, send)
    return sent[0]["status"], orjson.loads(sent[1]["body"])


@pytest.fixture
async def gw(tmp_path: Path) -> Any:
    settings = load_settings({"WATCHLLM_ADMIN_KEY": ADMIN, "WATCHLLM_DATA_DIR": str(tmp_path),
                              "WATCHLLM_MASTER_KEY": _key(), "WATCHLLM_KEY_CACHE_TTL": "0",
                              # chDB allows one data directory per process (tests/conftest.py)
                              "WATCHLLM_CLICKHOUSE_URL": "off"},
                             None)
    gateway = Gateway(settings, build_env)
    await gateway.startup()
    gateway.plans = PlanStore(gateway.env.db, settings)  # type: ignore[attr-defined]
    gateway.limits = LimitsService(gateway.env.counters, settings,  # type: ignore[attr-defined]
                                   gateway.plans)  # type: ignore[attr-defined]
    yield gateway
    await gateway.shutdown()


async def test_plan_lifecycle_and_limits_resolution(gw: Any) -> None:
    status, plan = await call(gw, "POST", "/v1/admin/plans", {
        "name": "team", "limits": {"rpm": 100, "key": {"rpm": 10, "tpm": 5000},
                                   "budget_usd": 50, "period": "month"}})
    assert status == 201 and plan["limits"]["budget_usd"] == 50
    status, bad = await call(gw, "POST", "/v1/admin/plans", {"name": "x", "limits": {"rpn": 1}})
    assert status == 400 and "rpn" in bad["error"]["message"]
    # A rate of 0 is refused (it used to be stored, and every request then failed).
    status, bad = await call(gw, "POST", "/v1/admin/plans",
                             {"name": "x", "limits": {"key": {"tpm": 0}}})
    assert status == 400 and bad["error"]["param"] == "key.tpm"
    assert "positive" in bad["error"]["message"]
    _, project = await call(gw, "POST", "/v1/admin/projects", {"name": "app"})
    status, updated = await call(gw, "PATCH", f"/v1/admin/projects/{project['id']}",
                                 {"plan_id": plan["id"], "name": "app2"})
    assert status == 200 and updated["plan"]["name"] == "team" and updated["name"] == "app2"
    _, key = await call(gw, "POST", "/v1/admin/keys", {"project_id": project["id"]})
    limits = await gw.limits.limits_for(project["id"], key["id"])
    assert (limits.project.rpm, limits.key.rpm, limits.key.tpm) == (100, 10, 5000)
    status, _ = await call(gw, "PATCH", f"/v1/admin/keys/{key['id']}", {"limits": {"rpm": 2}})
    assert status == 200
    limits = await gw.limits.limits_for(project["id"], key["id"])
    assert (limits.key.rpm, limits.key.tpm, limits.budget_usd) == (2, 5000, 50.0)
    status, usage = await call(gw, "GET", f"/v1/admin/projects/{project['id']}/usage")
    assert status == 200 and usage["budget"]["used"] == 0 and usage["budget"]["limit"] == 50
    status, err = await call(gw, "DELETE", f"/v1/admin/plans/{plan['id']}")
    assert status == 400 and "used by 1 project" in err["error"]["message"]
    status, _ = await call(gw, "PATCH", f"/v1/admin/plans/{plan['id']}", {"limits": {"rpm": 7}})
    assert status == 200
    assert (await gw.limits.limits_for(project["id"], key["id"])).project.rpm == 7


async def test_delete_project_removes_keys(gw: Any) -> None:
    _, project = await call(gw, "POST", "/v1/admin/projects", {"name": "doomed"})
    _, key = await call(gw, "POST", "/v1/admin/keys", {"project_id": project["id"]})
    status, _ = await call(gw, "DELETE", f"/v1/admin/projects/{project['id']}")
    assert status == 200
    assert await gw.store.get_key(key["id"]) is None
    status, _ = await call(gw, "GET", f"/v1/admin/projects/{project['id']}")
    assert status == 404
    status, _ = await call(gw, "DELETE", "/v1/admin/projects/nope", token="wrong")
    assert status == 401


async def test_provider_keys_encrypted_bound_and_rotated(gw: Any) -> None:
    _, project = await call(gw, "POST", "/v1/admin/projects", {"name": "p"})
    _, other = await call(gw, "POST", "/v1/admin/projects", {"name": "q"})
    secret = "sk-proj-" + "x" * 40 + "WXYZ"
    path = f"/v1/admin/projects/{project['id']}/provider-keys"
    status, record = await call(gw, "POST", path, {"provider": "openai", "key": secret})
    assert status == 201 and record["hint"] == "...WXYZ" and "key" not in record
    row = await gw.env.db.fetch_one("SELECT * FROM provider_keys")
    assert secret not in str(row) and "WXYZ" not in row["ciphertext"]
    store: PlanStore = gw.plans
    assert await store.get_provider_key(project["id"], "openai") == secret
    # A ciphertext copied to another project's row does not open (associated data).
    await store.put_provider_key(other["id"], "openai", "sk-other-0000000000")
    await gw.env.db.execute("UPDATE provider_keys SET ciphertext = ? WHERE project_id = ?",
                            (row["ciphertext"], other["id"]))
    with pytest.raises(ServiceUnavailableError, match="integrity"):
        await store.get_provider_key(other["id"], "openai")
    await store.put_provider_key(other["id"], "openai", "sk-other-0000000000")  # repaired
    # Rotation: new master key current, old one previous; every row re-sealed.
    old_ring = store.ring
    new_key = _key()
    store._ring = KeyRing(new_key, (gw.settings.master_key,))
    assert await store.rotate_provider_keys() == 2
    assert await store.rotate_provider_keys() == 0
    store._ring = KeyRing(new_key)  # the old key is gone: everything still opens
    assert await store.get_provider_key(project["id"], "openai") == secret
    assert old_ring.current != store.ring.current
    status, listing = await call(gw, "GET", path)
    assert status == 200 and [k["provider"] for k in listing["data"]] == ["openai"]
    status, _ = await call(gw, "DELETE", path + "/openai")
    assert status == 200 and await store.get_provider_key(project["id"], "openai") is None


def test_master_key_must_be_32_bytes() -> None:
    with pytest.raises(ValueError, match="WATCHLLM_MASTER_KEY"):
        KeyRing(base64.b64encode(b"short").decode())
    assert KeyRing(os.urandom(32).hex()).current
