"""An in-process gateway and a one-call ASGI client, shared by tests/ingest and
tests/analytics."""

from __future__ import annotations

import urllib.parse
from typing import Any

import orjson

from watchllm.app import Gateway

ADMIN = "admin-secret"


async def call(gw: Gateway, method: str, path: str, body: Any = None, token: str = ADMIN,
               query: dict[str, Any] | None = None, raw: bytes | None = None
               ) -> tuple[int, Any]:
    data = raw if raw is not None else (orjson.dumps(body) if body is not None else b"")
    scope = {"type": "http", "method": method, "path": path,
             "query_string": urllib.parse.urlencode(query or {}).encode(),
             "headers": [(b"authorization", f"Bearer {token}".encode()),
                         (b"content-length", str(len(data)).encode())]}
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": data, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await gw(scope, receive, send)
    return sent[0]["status"], orjson.loads(sent[1]["body"])


async def new_key(gw: Gateway, name: str, scopes: list[str] | None = None) -> tuple[str, str]:
    """(project_id, key) for a new project."""
    status, project = await call(gw, "POST", "/v1/admin/projects", {"name": name})
    assert status == 201, project
    body: dict[str, Any] = {"project_id": project["id"]}
    if scopes is not None:
        body["scopes"] = scopes
    status, key = await call(gw, "POST", "/v1/admin/keys", body)
    assert status == 201, key
    return project["id"], key["key"]
