"""`GET /openapi.json`: OpenAPI 3.1 for the ingest and analytics APIs.

Hand-written paths; the event schemas are generated from the validation rules
(`watchllm.events.validation.json_schema`), so the document cannot drift from what the
server enforces. The fuzz tests (tests/ingest/test_fuzz.py) generate payloads from it.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Any

import orjson

from watchllm import __version__
from watchllm.analytics.params import LOG_FILTERS, MAX_LOG_LIMIT, METRICS, PERIODS
from watchllm.events.schema import EVENT_TYPES
from watchllm.events.validation import json_schema
from watchllm.http.asgi import JSON_HEADERS, Request, Send, send_body

if TYPE_CHECKING:
    from watchllm.app import Gateway


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str = "") -> dict[str, Any]:
    return {"description": description or "OK",
            "content": {"application/json": {"schema": schema}}}


ERRORS = {
    "400": _json(_ref("Error"), "Malformed request (not JSON, wrong envelope)"),
    "401": _json(_ref("Error"), "Missing or invalid key"),
    "403": _json(_ref("Error"), "The key may not access this project"),
    "413": _json(_ref("Error"), "Too many events or bytes"),
    "422": _json(_ref("Error"), "Invalid events; error.errors lists index, field, message"),
    "503": _json(_ref("Error"), "Not durable in time, or analytics unavailable; retry"),
}


def _q(name: str, schema: dict[str, Any], description: str = "") -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema,
            "description": description}


def _path(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True,
            "schema": {"type": "string", "minLength": 1, "maxLength": 256}}


PROJECT = _q("project_id", {"type": "string"}, "required for admin keys to narrow; a project "
             "key sees only its own project")
TIME = {"type": "string", "description": "epoch milliseconds or ISO 8601"}


def _analytics(summary: str, params: list[dict[str, Any]], path: list[dict[str, Any]] | None = None
               ) -> dict[str, Any]:
    return {"get": {"summary": summary, "parameters": [*(path or []), PROJECT, *params],
                    "responses": {"200": _json({"type": "object"}), "400": ERRORS["400"],
                                  "401": ERRORS["401"], "403": ERRORS["403"],
                                  "503": ERRORS["503"]}}}


@cache
def document() -> bytes:
    events = {f"Event_{k}": json_schema(k) for k in EVENT_TYPES}
    accepted = {"type": "object", "properties": {
        "index": {"type": "integer"}, "event_id": {"type": "string"},
        "duplicate": {"type": "boolean"}}}
    doc = {
        "openapi": "3.1.0",
        "info": {"title": "WatchLLM ingest and analytics API", "version": __version__},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                **events,
                "Event": {"oneOf": [_ref(n) for n in events],
                          "discriminator": {"propertyName": "event_type"}},
                "Batch": {"type": "object", "required": ["events"],
                          "additionalProperties": False, "properties": {
                              "events": {"type": "array", "items": _ref("Event")},
                              "mode": {"type": "string", "enum": ["atomic", "partial"]}}},
                "BatchResult": {"type": "object", "properties": {
                    "object": {"const": "event_batch"}, "mode": {"type": "string"},
                    "accepted": {"type": "array", "items": accepted},
                    "rejected": {"type": "array", "items": {"type": "integer"}},
                    "errors": {"type": "array", "items": _ref("FieldError")}}},
                "FieldError": {"type": "object", "properties": {
                    "index": {"type": "integer"}, "field": {"type": "string"},
                    "message": {"type": "string"}}},
                "Error": {"type": "object", "properties": {"error": {
                    "type": "object", "properties": {
                        "message": {"type": "string"}, "type": {"type": "string"},
                        "param": {"type": ["string", "null"]},
                        "code": {"type": ["string", "null"]},
                        "errors": {"type": "array", "items": _ref("FieldError")}}}}},
            },
        },
        "security": [{"bearer": []}],
        "paths": {
            "/v1/projects/{project_id}/events": {"post": {
                "summary": "Ingest one event", "parameters": [_path("project_id")],
                "requestBody": {"required": True,
                                "content": {"application/json": {"schema": _ref("Event")}}},
                "responses": {"202": _json({"type": "object"}, "Accepted and durable"),
                              **ERRORS}}},
            "/v1/events/batch": {"post": {
                "summary": "Ingest a batch of events",
                "requestBody": {"required": True,
                                "content": {"application/json": {"schema": _ref("Batch")}}},
                "responses": {"202": _json(_ref("BatchResult"), "Accepted and durable"),
                              **ERRORS}}},
            "/v1/analytics/stats": _analytics("Totals over a time range",
                                              [_q("from", TIME), _q("to", TIME)]),
            "/v1/analytics/timeseries": _analytics("Bucketed series, empty buckets filled", [
                _q("period", {"type": "string", "enum": list(PERIODS)}),
                _q("metric", {"type": "string"}, "comma-separated: " + ", ".join(METRICS))]),
            "/v1/analytics/logs": _analytics("Events newest first, keyset pagination", [
                *(_q(f, {"type": "string"}) for f in LOG_FILTERS), _q("q", {"type": "string"}),
                _q("from", TIME), _q("to", TIME), _q("cursor", {"type": "string"}),
                _q("limit", {"type": "integer", "minimum": 1, "maximum": MAX_LOG_LIMIT})]),
            "/v1/analytics/event/{event_id}": _analytics(
                "One event with its tool calls and agent steps", [], [_path("event_id")]),
            "/v1/analytics/runs/{run_id}": _analytics("A run's events in order", [],
                                                      [_path("run_id")]),
        },
    }
    return orjson.dumps(doc)


async def openapi(gw: Gateway, req: Request, send: Send) -> None:
    await send_body(send, 200, document(), JSON_HEADERS)


ROUTES = {("GET", "/openapi.json"): openapi}
PREFIX_ROUTES: list[Any] = []
