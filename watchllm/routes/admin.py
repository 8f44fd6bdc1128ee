"""Admin API: projects and keys. Authenticated by the admin key (`WATCHLLM_ADMIN_KEY`).

    POST /v1/admin/projects              {"name"}                  -> project
    GET  /v1/admin/projects                                        -> list
    POST /v1/admin/keys                  {"project_id", "name", "scopes"?, "expires_at"?,
                                          "allowed_models"?}       -> key (+ plaintext once)
    GET  /v1/admin/keys?project_id=                                -> list (prefixes only)
    POST /v1/admin/keys/{id}/revoke                                -> key
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from watchllm.errors import InvalidRequestError, NotFoundError
from watchllm.http.asgi import Request, Send, send_json

if TYPE_CHECKING:
    from watchllm.app import Gateway

_LIMIT = 1 << 20


async def _admin(gw: Gateway, req: Request) -> None:
    principal = await gw.auth.authenticate(req.bearer(), "admin")
    principal.require("admin")
    if not principal.is_admin:
        from watchllm.errors import PermissionDeniedError

        raise PermissionDeniedError("the admin API needs the admin key (WATCHLLM_ADMIN_KEY)")


def _opt(data: dict[str, Any], name: str, kind: type, default: Any = None) -> Any:
    value = data.get(name, default)
    if value is not None and not isinstance(value, kind):
        raise InvalidRequestError(f"'{name}' must be of type {kind.__name__}", param=name)
    return value


async def create_project(gw: Gateway, req: Request, send: Send) -> None:
    await _admin(gw, req)
    _, data = await req.json_object(_LIMIT)
    name = _opt(data, "name", str)
    if not name:
        raise InvalidRequestError("'name' is required", param="name")
    project = await gw.store.create_project(name, _opt(data, "settings", dict, {}))
    await send_json(send, 201, project.public())


async def list_projects(gw: Gateway, req: Request, send: Send) -> None:
    await _admin(gw, req)
    projects = await gw.store.list_projects()
    await send_json(send, 200, {"object": "list", "data": [p.public() for p in projects]})


async def create_key(gw: Gateway, req: Request, send: Send) -> None:
    await _admin(gw, req)
    _, data = await req.json_object(_LIMIT)
    project_id = _opt(data, "project_id", str)
    if not project_id:
        raise InvalidRequestError("'project_id' is required", param="project_id")
    scopes = _opt(data, "scopes", list, ["proxy", "ingest", "analytics"])
    models = _opt(data, "allowed_models", list)
    record, plaintext = await gw.store.create_key(
        project_id, _opt(data, "name", str, "default"), tuple(scopes),
        _opt(data, "expires_at", int), tuple(models) if models else None)
    await send_json(send, 201, {**record.public(), "key": plaintext})


async def list_keys(gw: Gateway, req: Request, send: Send) -> None:
    await _admin(gw, req)
    project_id = req.query_params().get("project_id") or None
    keys = await gw.store.list_keys(project_id)
    await send_json(send, 200, {"object": "list", "data": [k.public() for k in keys]})


async def revoke_key(gw: Gateway, req: Request, send: Send) -> None:
    await _admin(gw, req)
    key_id, _, action = req.path.removeprefix("/v1/admin/keys/").partition("/")
    if action != "revoke" or not key_id:
        raise NotFoundError(f"Unknown endpoint: {req.method} {req.path}")
    record = await gw.store.revoke_key(key_id)
    gw.auth.forget(key_id)
    await send_json(send, 200, record.public())


ROUTES = {
    ("POST", "/v1/admin/projects"): create_project,
    ("GET", "/v1/admin/projects"): list_projects,
    ("POST", "/v1/admin/keys"): create_key,
    ("GET", "/v1/admin/keys"): list_keys,
}
PREFIX_ROUTES = [("POST", "/v1/admin/keys/", revoke_key)]
