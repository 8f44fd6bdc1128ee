"""Admin API: plans, project update/delete, per-key limits, provider keys, usage.

    POST   /v1/admin/plans                    {"name", "limits"}            -> plan
    GET    /v1/admin/plans                                                  -> list
    GET    /v1/admin/plans/{id}                                             -> plan
    PATCH  /v1/admin/plans/{id}               {"name"?, "limits"?}          -> plan
    DELETE /v1/admin/plans/{id}                                             -> deleted
    GET    /v1/admin/projects/{id}                                          -> project (+ plan)
    PATCH  /v1/admin/projects/{id}            {"name"?, "settings"?, "plan_id"?} -> project
    DELETE /v1/admin/projects/{id}            (its keys and provider keys too) -> deleted
    GET    /v1/admin/projects/{id}/usage                                    -> quota use
    POST   /v1/admin/projects/{id}/provider-keys  {"provider", "key"}       -> hint only
    GET    /v1/admin/projects/{id}/provider-keys                            -> list (hints)
    DELETE /v1/admin/projects/{id}/provider-keys/{provider}                 -> deleted
    PATCH  /v1/admin/keys/{id}                {"limits": {...} | null}      -> key
    POST   /v1/admin/provider-keys/rotate                                   -> {"rotated": n}

Changes reach this worker at once and other workers within WATCHLLM_KEY_CACHE_TTL.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from watchllm.errors import InvalidRequestError, NotFoundError
from watchllm.http.asgi import Request, Send, send_json
from watchllm.metadata.plans import PlanStore
from watchllm.routes.admin import _admin, _opt

if TYPE_CHECKING:
    from watchllm.app import Gateway

_LIMIT = 1 << 20


def _plans(gw: Gateway) -> PlanStore:
    store = getattr(gw, "plans", None)
    return store if isinstance(store, PlanStore) else PlanStore(gw.env.db, gw.settings)


def _forget_limits(gw: Gateway, project_id: str | None = None) -> None:
    limits = getattr(gw, "limits", None)
    if limits is not None:
        limits.forget(project_id)


def _forget_cached(gw: Gateway, project_id: str, *caches: str) -> None:
    """Drop a project from this worker's caches named (`projects`, `provider_keys`), after
    the write: a read begun before it cannot store the old answer again. Other workers see
    the change within the TTL."""
    for name in caches:
        cache = getattr(gw, name, None)
        if cache is not None:
            cache.forget(project_id)


def _parts(req: Request, prefix: str) -> list[str]:
    parts = req.path.removeprefix(prefix).strip("/").split("/")
    if not parts[0]:
        raise NotFoundError(f"Unknown endpoint: {req.method} {req.path}")
    return parts


def _unknown(req: Request) -> NotFoundError:
    return NotFoundError(f"Unknown endpoint: {req.method} {req.path}")


# -- plans -----------------------------------------------------------------------------------
async def create_plan(gw: Gateway, req: Request, send: Send) -> None:
    await _admin(gw, req)
    _, data = await req.json_object(_LIMIT)
    name = _opt(data, "name", str)
    if not name:
        raise InvalidRequestError("'name' is required", param="name")
    plan = await _plans(gw).create_plan(name, _opt(data, "limits", dict, {}))
    await send_json(send, 201, plan.public())


async def list_plans(gw: Gateway, req: Request, send: Send) -> None:
    await _admin(gw, req)
    plans = await _plans(gw).list_plans()
    await send_json(send, 200, {"object": "list", "data": [p.public() for p in plans]})


async def plan_item(gw: Gateway, req: Request, send: Send) -> None:
    await _admin(gw, req)
    parts = _parts(req, "/v1/admin/plans/")
    if len(parts) != 1:
        raise _unknown(req)
    store = _plans(gw)
    if req.method == "GET":
        await send_json(send, 200, (await store.get_plan(parts[0])).public())
    elif req.method == "PATCH":
        _, data = await req.json_object(_LIMIT)
        plan = await store.update_plan(parts[0], _opt(data, "name", str),
                                       _opt(data, "limits", dict))
        _forget_limits(gw)
        await send_json(send, 200, plan.public())
    else:
        await store.delete_plan(parts[0])
        await send_json(send, 200, {"id": parts[0], "object": "plan", "deleted": True})


# -- projects ----------------------------------------------------------------------------------
async def _project_view(gw: Gateway, project_id: str) -> dict[str, Any]:
    project = (await gw.store.get_project(project_id)).public()
    if project["plan_id"]:
        project["plan"] = (await _plans(gw).get_plan(project["plan_id"])).public()
    return project


async def project_item(gw: Gateway, req: Request, send: Send) -> None:
    await _admin(gw, req)
    parts = _parts(req, "/v1/admin/projects/")
    project_id, rest = parts[0], parts[1:]
    store = _plans(gw)
    if rest and rest[0] == "provider-keys":
        await _provider_keys(gw, req, send, store, project_id, rest[1:])
    elif rest == ["usage"] and req.method == "GET":
        limits = getattr(gw, "limits", None)
        if limits is None:
            raise NotFoundError("limits are not enabled on this gateway")
        await gw.store.get_project(project_id)
        await send_json(send, 200, {"project_id": project_id, **await limits.usage(project_id)})
    elif rest:
        raise _unknown(req)
    elif req.method == "GET":
        await send_json(send, 200, await _project_view(gw, project_id))
    elif req.method == "PATCH":
        _, data = await req.json_object(_LIMIT)
        unknown = sorted(set(data) - {"name", "settings", "plan_id"})
        if unknown:
            raise InvalidRequestError(f"unknown fields {unknown}", param=unknown[0])
        await store.update_project(project_id, data)
        _forget_limits(gw, project_id)
        _forget_cached(gw, project_id, "projects")  # settings apply now on this worker
        await send_json(send, 200, await _project_view(gw, project_id))
    elif req.method == "DELETE":
        for key_id in await store.delete_project(project_id):
            gw.auth.forget(key_id)
        _forget_limits(gw, project_id)
        _forget_cached(gw, project_id, "projects", "provider_keys")
        await send_json(send, 200, {"id": project_id, "object": "project", "deleted": True})
    else:
        raise _unknown(req)


async def _provider_keys(gw: Gateway, req: Request, send: Send, store: PlanStore,
                         project_id: str, rest: list[str]) -> None:
    try:
        await _provider_keys_call(gw, req, send, store, project_id, rest)
    finally:
        if req.method in ("POST", "DELETE"):
            _forget_cached(gw, project_id, "provider_keys")


async def _provider_keys_call(gw: Gateway, req: Request, send: Send, store: PlanStore,
                              project_id: str, rest: list[str]) -> None:
    if not rest and req.method == "POST":
        _, data = await req.json_object(_LIMIT)
        record = await store.put_provider_key(project_id, _opt(data, "provider", str, ""),
                                              _opt(data, "key", str, ""))
        await send_json(send, 201, record)
    elif not rest and req.method == "GET":
        await gw.store.get_project(project_id)
        listing = await store.list_provider_keys(project_id)
        await send_json(send, 200, {"object": "list", "data": listing})
    elif len(rest) == 1 and req.method == "DELETE":
        await store.delete_provider_key(project_id, rest[0])
        await send_json(send, 200, {"project_id": project_id, "provider": rest[0],
                                    "object": "provider_key", "deleted": True})
    else:
        raise _unknown(req)


# -- keys, rotation --------------------------------------------------------------------------
async def update_key(gw: Gateway, req: Request, send: Send) -> None:
    await _admin(gw, req)
    parts = _parts(req, "/v1/admin/keys/")
    if len(parts) != 1:
        raise _unknown(req)
    _, data = await req.json_object(_LIMIT)
    if "limits" not in data:
        raise InvalidRequestError("'limits' is required (an object, or null to clear)",
                                  param="limits")
    await _plans(gw).set_key_limits(parts[0], _opt(data, "limits", dict))
    record = await gw.store.get_key(parts[0])
    if record is None:
        raise NotFoundError(f"no key with id {parts[0]!r}", param="key_id")
    _forget_limits(gw, record.project_id)
    await send_json(send, 200, {**record.public(), "limits": data["limits"]})


async def rotate_provider_keys(gw: Gateway, req: Request, send: Send) -> None:
    await _admin(gw, req)
    store = _plans(gw)
    rotated = await store.rotate_provider_keys()
    await send_json(send, 200, {"rotated": rotated, "master_key_id": store.ring.current})


ROUTES = {
    ("POST", "/v1/admin/plans"): create_plan,
    ("GET", "/v1/admin/plans"): list_plans,
    ("POST", "/v1/admin/provider-keys/rotate"): rotate_provider_keys,
}
PREFIX_ROUTES = [
    ("GET", "/v1/admin/plans/", plan_item),
    ("PATCH", "/v1/admin/plans/", plan_item),
    ("DELETE", "/v1/admin/plans/", plan_item),
    ("GET", "/v1/admin/projects/", project_item),
    ("PATCH", "/v1/admin/projects/", project_item),
    ("DELETE", "/v1/admin/projects/", project_item),
    ("POST", "/v1/admin/projects/", project_item),
    ("PATCH", "/v1/admin/keys/", update_key),
]
