"""Ingest API (docs/analytics.md): events from SDKs and agents, into the same durable
pipeline as the gateway's own events. Needs a key with the `ingest` scope; a project key
writes only its own project, the admin key any project.

    POST /v1/projects/{project_id}/events   one event (a JSON object)
    POST /v1/events/batch                   {"events": [...], "mode": "atomic" | "partial"}

Rules live in `watchllm/events/validation.py` (shared with the SDK). Answers:
- 202: accepted and durable (in the spool on disk, see `_enqueue`); the body lists every
  accepted event with its event_id (generated when the client sent none) and whether it
  was a duplicate.
- 422: invalid; `error.errors` lists {index, field, message}. Batches are all-or-nothing by
  default (`mode: atomic`: one bad event rejects the batch, nothing is written); with
  `mode: partial` the valid events are written and the invalid ones listed in `rejected`
  (422 only when none was valid).
- 403: an event targets a project the key may not write (nothing is written, any mode).
- 413: more than WATCHLLM_INGEST_MAX_EVENTS events or WATCHLLM_INGEST_MAX_BYTES bytes.
- 503: the events could not be made durable (queue full, or not confirmed in time);
  retrying with the same event_ids is safe.

Idempotency: an event_id already accepted for the project in the last hour (the KV seam:
in-process or Redis) is answered `duplicate: true` and not written again; duplicates
within one batch likewise. Beyond that window the ReplacingMergeTree tables collapse
rows with the same (project_id, timestamp, event_id).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

import orjson

from watchllm.auth import Principal
from watchllm.errors import (
    InvalidRequestError,
    NotFoundError,
    PayloadTooLargeError,
    ServiceUnavailableError,
    WatchLLMError,
)
from watchllm.events.validation import FieldError, validate_event
from watchllm.http.asgi import Request, Send, send_json

if TYPE_CHECKING:
    from watchllm.app import Gateway

log = logging.getLogger("watchllm.ingest")
DEDUP_TTL_S = 3600.0
MAX_ERRORS = 1000  # listed in one response; the count is always complete


class EventErrors(WatchLLMError):
    """400/403/422 in the OpenAI error shape, plus `errors`: [{index, field, message}]."""

    def __init__(self, message: str, errors: list[FieldError], *, status: int = 422,
                 type_: str = "invalid_request_error", code: str = "invalid_events") -> None:
        first = errors[0] if errors else None
        super().__init__(message, param=f"events[{first.index}].{first.field}" if first else None,
                         code=code)
        self.status, self.type, self.errors = status, type_, errors

    def body(self) -> bytes:
        return orjson.dumps({"error": {
            "message": self.message, "type": self.type, "param": self.param, "code": self.code,
            "errors": [e.as_dict() for e in self.errors[:MAX_ERRORS]],
            "error_count": len(self.errors)}})


class QueueFull(ServiceUnavailableError):
    """The events were not queued (nothing to undo but the dedup claims)."""


class NotConfirmed(ServiceUnavailableError):
    """The events are queued but not confirmed durable in time (keep the dedup claims:
    a retry must not queue them twice)."""


async def _body(gw: Gateway, req: Request) -> Any:
    limit = gw.settings.ingest_max_bytes
    declared = req.header(b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLargeError(f"Request body is {declared} bytes; the ingest limit is "
                                   f"{limit} bytes (WATCHLLM_INGEST_MAX_BYTES).")
    raw = await req.body(limit)
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequestError(f"Request body is not valid JSON: {exc}") from None


def _check_access(principal: Principal, rows: list[dict[str, Any] | None]) -> None:
    denied = [FieldError(i, "project_id", f"this key may not write to project "
                                          f"{row['project_id']!r}")
              for i, row in enumerate(rows)
              if row is not None and not principal.can_access(row["project_id"])]
    if denied:
        raise EventErrors("events target a project this key may not write to; nothing was "
                          "written", denied, status=403, type_="permission_error",
                          code="permission_denied")


async def _fresh(gw: Gateway, rows: list[dict[str, Any]]) -> list[bool]:
    """Per row: True unless its event_id was accepted before (in this batch or recently)."""
    seen: set[tuple[str, str]] = set()
    local = []
    for row in rows:
        key = (row["project_id"], row["event_id"])
        local.append(key not in seen)
        seen.add(key)

    async def claim(row: dict[str, Any]) -> bool:
        try:
            return await gw.env.kv.add(f"wl:evid:{row['project_id']}:{row['event_id']}",
                                       b"1", DEDUP_TTL_S)
        except Exception as e:  # an optimisation only: ClickHouse collapses duplicates too
            log.warning("event_id dedup unavailable (%s: %s)", type(e).__name__, e)
            return True

    claimed = await asyncio.gather(*(claim(r) for r, first in zip(rows, local, strict=True)
                                     if first))
    it = iter(claimed)
    return [first and next(it) for first in local]


async def _forget(gw: Gateway, rows: list[dict[str, Any]]) -> None:
    for row in rows:
        try:
            await gw.env.kv.delete(f"wl:evid:{row['project_id']}:{row['event_id']}")
        except Exception as e:  # the retry then reads as a duplicate; the log says why
            log.warning("could not release event_id %s: %s", row["event_id"], e)


def _dropped(queue: object) -> int:
    metrics = getattr(queue, "metrics", queue)
    return int(getattr(metrics, "dropped", 0))


async def _enqueue(gw: Gateway, rows: list[dict[str, Any]]) -> None:
    """Put `rows` on the event queue and return once they are durable.

    The durable pipeline's `wait_spooled()` returns once everything accepted so far is
    on disk (fsync by the spool's policy) or refused, with the refused total; other
    queues are flushed. Bounded by WATCHLLM_INGEST_DURABLE_TIMEOUT. A refusal (full
    buffer or spool, closed queue) or the timeout answers 503."""
    queue = gw.env.events
    before = _dropped(queue)
    for row in rows:  # synchronous: no other put interleaves, so a drop here is ours
        queue.put(row)
    if _dropped(queue) != before:
        raise QueueFull("the event queue is full; retry later", headers={"retry-after": "1"})
    wait_spooled = getattr(queue, "wait_spooled", None)
    try:
        async with asyncio.timeout(gw.settings.ingest_durable_timeout_s):
            if wait_spooled is None:
                await queue.flush()
            elif await wait_spooled() != before:
                # Refused by the writer (spool full, disk error): maybe ours, maybe not all.
                raise QueueFull("the event spool refused events; retry later",
                                headers={"retry-after": "1"})
    except TimeoutError:
        raise NotConfirmed(
            "events are queued but not yet confirmed durable; retrying with the same "
            "event_ids is safe", headers={"retry-after": "5"}) from None


async def _accept(gw: Gateway, principal: Principal,
                  rows: list[dict[str, Any]]) -> list[bool]:
    """Write the rows (all of them, or none on failure); per row: was it a duplicate."""
    for row in rows:
        row["key_id"] = principal.key_id
    fresh = await _fresh(gw, rows)
    new = [r for r, f in zip(rows, fresh, strict=True) if f]
    if new:
        try:
            await _enqueue(gw, new)
        except QueueFull:
            await _forget(gw, new)
            raise
    return [not f for f in fresh]


async def ingest_one(gw: Gateway, req: Request, send: Send) -> None:
    project_id, _, rest = req.path.removeprefix("/v1/projects/").partition("/")
    if rest != "events" or not project_id:
        raise NotFoundError(f"Unknown endpoint: {req.method} {req.path}")
    principal = await gw.auth.authenticate(req.bearer(), "ingest")
    if not principal.can_access(project_id):
        raise EventErrors("this key may not write to this project; nothing was written",
                          [FieldError(0, "project_id", f"this key may not write to project "
                                                       f"{project_id!r}")],
                          status=403, type_="permission_error", code="permission_denied")
    payload = await _body(gw, req)
    if isinstance(payload, dict) and payload.get("project_id", project_id) != project_id:
        raise EventErrors("the event's project_id differs from the URL's",
                          [FieldError(0, "project_id", "must match the project in the URL")])
    row, errors = validate_event(payload, 0, default_project=project_id)
    if row is None:
        raise EventErrors("the event is invalid; nothing was written", errors)
    (duplicate,) = await _accept(gw, principal, [row])
    await send_json(send, 202, {"object": "event", "id": row["event_id"],
                                "project_id": project_id, "accepted": True,
                                "duplicate": duplicate})


async def ingest_batch(gw: Gateway, req: Request, send: Send) -> None:
    principal = await gw.auth.authenticate(req.bearer(), "ingest")
    body = await _body(gw, req)
    if not isinstance(body, dict) or not isinstance(body.get("events"), list):
        raise InvalidRequestError("expected a JSON object {\"events\": [...]}", param="events")
    mode = body.get("mode", "atomic")
    if mode not in ("atomic", "partial"):
        raise InvalidRequestError("'mode' must be atomic or partial", param="mode")
    extra = sorted(set(body) - {"events", "mode"})
    if extra:
        raise InvalidRequestError(f"unknown field {extra[0]!r}", param=extra[0])
    payloads: list[Any] = body["events"]
    limit = gw.settings.ingest_max_events
    if len(payloads) > limit:
        raise PayloadTooLargeError(f"{len(payloads)} events; a batch holds at most {limit} "
                                   "(WATCHLLM_INGEST_MAX_EVENTS)", code="too_many_events")
    default = None if principal.project_id == "*" else principal.project_id
    rows: list[dict[str, Any] | None] = []
    errors: list[FieldError] = []
    for i, payload in enumerate(payloads):
        row, errs = validate_event(payload, i, default_project=default)
        rows.append(row)
        errors += errs
    _check_access(principal, rows)
    good = [(i, r) for i, r in enumerate(rows) if r is not None]
    if errors and (mode == "atomic" or not good):
        bad = len(payloads) - len(good)
        raise EventErrors(f"{bad} of {len(payloads)} events are invalid; nothing was written",
                          errors)
    duplicates = await _accept(gw, principal, [r for _, r in good])
    await send_json(send, 202, {
        "object": "event_batch", "mode": mode,
        "accepted": [{"index": i, "event_id": r["event_id"], "duplicate": d}
                     for (i, r), d in zip(good, duplicates, strict=True)],
        "rejected": sorted({e.index for e in errors}),
        "errors": [e.as_dict() for e in errors[:MAX_ERRORS]],
    })


ROUTES = {("POST", "/v1/events/batch"): ingest_batch}
PREFIX_ROUTES = [("POST", "/v1/projects/", ingest_one)]
