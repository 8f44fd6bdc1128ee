"""Cache purges, scoped to a project.

    POST /v1/cache/purge   {"namespace"?: str, "request"?: {...a request body...},
                            "endpoint"?: "chat/completions", "project_id"?: str}

- no `request`: every entry of `namespace` (or, without one, of the whole project);
- with `request`: the one entry that request would hit (same canonical key rules).
Authorised by a key with the `admin` scope (its own project) or the admin key (any project,
named by `project_id`). Answers `{"deleted": N}`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import orjson

from watchllm.cache.service import CACHEABLE
from watchllm.errors import InvalidRequestError
from watchllm.http.asgi import Request, Send, send_json

if TYPE_CHECKING:
    from watchllm.app import Gateway


async def purge(gw: Gateway, req: Request, send: Send) -> None:
    principal = await gw.auth.authenticate(req.bearer(), "admin")
    _, data = await req.json_object(1 << 22)
    project_id = principal.project_id
    if principal.is_admin:
        project_id = data.get("project_id") or ""
        if not isinstance(project_id, str) or not project_id:
            raise InvalidRequestError("the admin key must name 'project_id'",
                                      param="project_id")
    elif data.get("project_id") not in (None, project_id):
        raise InvalidRequestError("a project key may only purge its own project",
                                  param="project_id")
    namespace = data.get("namespace")
    if namespace is not None and not isinstance(namespace, str):
        raise InvalidRequestError("'namespace' must be a string", param="namespace")
    request = data.get("request")
    target = None
    if request is not None:
        endpoint = data.get("endpoint", "chat/completions")
        if not isinstance(request, dict) or endpoint not in CACHEABLE:
            raise InvalidRequestError(
                f"'request' must be a request body and 'endpoint' one of {', '.join(CACHEABLE)}",
                param="request")
        target = (endpoint, orjson.dumps(request))
    deleted = await gw.cache.purge(project_id, namespace, target)
    await send_json(send, 200, {"object": "cache.purge", "project_id": project_id,
                                "deleted": deleted})


ROUTES = {("POST", "/v1/cache/purge"): purge}
