"""Fuzz the ingest endpoints with payloads generated from the server's own /openapi.json
(schema-valid events, then mutated: wrong types, unknown fields, missing fields, junk).

Properties: never a 5xx; the status is one the document lists; and nothing is partially
written: after each request the queue holds exactly the events the response accepted
(none at all for a non-2xx answer)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.ingest.helpers import call, new_key
from tests.ingest.test_ingest_api import settings_for
from watchllm.app import Gateway
from watchllm.env.embedded import build_env
from watchllm.events.validation import now_ms

JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
                    | st.text(max_size=8), lambda c: st.lists(c, max_size=3)
                    | st.dictionaries(st.text(max_size=5), c, max_size=3), max_leaves=6)


def from_schema(schema: dict[str, Any], defs: dict[str, Any]) -> st.SearchStrategy[Any]:
    """A strategy for the JSON Schema subset /openapi.json uses."""
    if "$ref" in schema:
        return st.deferred(lambda: from_schema(defs[schema["$ref"].rsplit("/", 1)[1]], defs))
    for key in ("oneOf", "anyOf"):
        if key in schema:
            return st.one_of([from_schema(s, defs) for s in schema[key]])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kind = schema.get("type")
    if kind == "string":
        if "pattern" in schema:
            return st.from_regex(schema["pattern"], fullmatch=True).map(lambda s: s[:64])
        return st.text(min_size=schema.get("minLength", 0),
                       max_size=min(schema.get("maxLength", 20), 20))
    if kind == "integer":
        return st.integers(schema.get("minimum"), schema.get("maximum"))
    if kind == "number":
        return st.floats(schema.get("minimum"), schema.get("maximum"), allow_nan=False)
    if kind == "null":
        return st.none()
    if kind == "array":
        return st.lists(from_schema(schema.get("items", {}), defs),
                        max_size=min(schema.get("maxItems", 3), 3))
    if kind == "object":
        props = schema.get("properties")
        if props is None:
            value = schema.get("additionalProperties", {"type": "string"})
            return st.dictionaries(st.text(min_size=1, max_size=8), from_schema(value, defs),
                                   max_size=3)
        required = schema.get("required", [])
        fields = {n: (st.one_of(st.just(now_ms()), from_schema(s, defs)) if n == "timestamp"
                      else from_schema(s, defs)) for n, s in props.items()}
        return st.fixed_dictionaries({n: fields[n] for n in required},
                                     optional={n: f for n, f in fields.items()
                                               if n not in required})
    return JSON


def mutate(event: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    def apply(draw: Any) -> Any:
        value = draw(event)
        if not isinstance(value, dict) or not draw(st.booleans()):
            return value
        how = draw(st.sampled_from(["junk", "unknown", "drop", "not-object"]))
        keys = sorted(value)
        if how == "junk" and keys:
            value[draw(st.sampled_from(keys))] = draw(JSON)
        elif how == "unknown":
            value[draw(st.text(min_size=1, max_size=6))] = draw(JSON)
        elif how == "drop" and keys:
            value.pop(draw(st.sampled_from(keys)))
        elif how == "not-object":
            return draw(JSON)
        return value

    return st.composite(lambda draw: apply(draw))()


def test_fuzz_ingest(tmp_path: Path) -> None:
    loop = asyncio.new_event_loop()
    gw = Gateway(settings_for(tmp_path, WATCHLLM_INGEST_MAX_EVENTS="5"), build_env)
    loop.run_until_complete(gw.startup())
    try:
        project, key = loop.run_until_complete(new_key(gw, "fuzz"))
        _, doc = loop.run_until_complete(call(gw, "GET", "/openapi.json"))
        defs = doc["components"]["schemas"]
        listed = {int(c) for p in ("/v1/events/batch", "/v1/projects/{project_id}/events")
                  for c in doc["paths"][p]["post"]["responses"]}
        events = mutate(from_schema({"$ref": "#/components/schemas/Event"}, defs))
        batch = st.fixed_dictionaries(
            {"events": st.lists(events, max_size=7)},
            optional={"mode": st.sampled_from(["atomic", "partial", "other"])})
        bodies = st.one_of(batch.map(lambda b: ("batch", b)),
                           events.map(lambda e: ("one", e)),
                           JSON.map(lambda j: ("batch", j)))
        queue: Any = gw.env.events
        seen: set[int] = set()

        @settings(max_examples=300, deadline=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
        @given(bodies)
        def check(item: tuple[str, Any]) -> None:
            where, body = item
            path = "/v1/events/batch" if where == "batch" else f"/v1/projects/{project}/events"
            before = len(queue.snapshot())
            status, answer = loop.run_until_complete(
                call(gw, "POST", path, raw=json.dumps(body).encode(), token=key))
            assert status < 500 and status in listed, (status, answer)
            seen.add(status)
            new = queue.snapshot()[before:]
            if status != 202:
                assert new == [], (status, answer)
            elif where == "batch":
                fresh = [a["event_id"] for a in answer["accepted"] if not a["duplicate"]]
                assert [r["event_id"] for r in new] == fresh
            else:
                assert [r["event_id"] for r in new] == ([] if answer["duplicate"]
                                                        else [answer["id"]])

        check()
        assert {202, 400, 413, 422} <= seen, seen  # the fuzz reached accepting paths too
    finally:
        loop.run_until_complete(gw.shutdown())
        loop.close()
