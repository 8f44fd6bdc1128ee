"""What a limits decision looks like to the client: OpenAI's x-ratelimit-* headers on every
response and its 429s (message, type, Retry-After), worked out from an admission."""

from __future__ import annotations

from typing import TYPE_CHECKING

from watchllm import core, metrics
from watchllm.errors import RateLimitError
from watchllm.http.asgi import TextHeaders
from watchllm.limits.ops import NEVER, QUOTA, Outcome
from watchllm.limits.reset import duration

if TYPE_CHECKING:
    from watchllm.limits.plan import Limits
    from watchllm.limits.service import Admission, Admitted

class QuotaExceededError(RateLimitError):
    """The plan's budget or request/token quota for the period is used up (OpenAI's shape)."""

    type = "insufficient_quota"
    default_code = "insufficient_quota"


def headers(admission: Admitted) -> TextHeaders:
    """OpenAI's x-ratelimit-* for the tightest request and token limits (none if unlimited)."""
    if isinstance(admission, core.RateGrant):  # admitted at once: worked out then
        return admission.rate_headers
    outcome = admission.outcome
    template = admission.plan
    if outcome is None or template is None:
        return []
    results, ops = outcome.results, admission.ops
    out: TextHeaders = []
    for names, idx in template.header_groups:
        if outcome.allowed:
            i = idx[0]
            if len(idx) > 1:
                for j in idx[1:]:
                    if results[j].remaining < results[i].remaining:
                        i = j
            res = results[i]
            remaining, limit, reset = res.remaining, ops[i].limit, res.reset_ms
        else:
            remaining, limit, reset = _denied_view(admission, outcome, idx)
        out += ((names[0], str(limit)), (names[1], str(remaining)),
                (names[2], duration(reset)))
    return out

def _denied_view(adm: Admission, outcome: Outcome, idx: tuple[int, ...]
                 ) -> tuple[int, int, int]:
    """(remaining, limit, reset_ms) of the tightest op in `idx` of a denied batch."""
    best: tuple[int, int, int] | None = None
    for i in idx:
        op, res = adm.ops[i], outcome.results[i]
        remaining, reset = res.remaining, res.reset_ms
        if i != outcome.denied:
            # A passing op reports the state as if admitted; nothing was written, so
            # undo this request's cost (exact for remaining, within 1 ms for reset).
            remaining += op.cost
            reset = max(0, reset - op.cost * op.window_ms // op.limit)
        if best is None or remaining < best[0]:
            best = (remaining, op.limit, reset)
    assert best is not None
    return best


def rejection(adm: Admission, outcome: Outcome, limits: Limits) -> RateLimitError:
    """The 429 of a denied batch: OpenAI's message, type and headers (Retry-After, and
    x-should-retry: false where waiting cannot help)."""
    i = outcome.denied
    op, res, name = adm.ops[i], outcome.results[i], adm.names[i]
    scope, _, what = name.partition(".")
    metrics.rate_limited(scope if what else "project", what or name)
    out = dict(headers(adm))
    retry_ms = res.retry_ms
    if retry_ms == NEVER or op.kind == QUOTA:
        out["x-should-retry"] = "false"  # the openai SDK then does not retry
    if retry_ms != NEVER:
        out["retry-after"] = str(max(1, -(-retry_ms // 1000)))
        out["retry-after-ms"] = str(max(retry_ms, 1))
    who = f"key {adm.key_id}" if scope == "key" else f"project {adm.project_id}"
    if op.kind == QUOTA:
        end = duration(res.reset_ms)
        if name == "budget":
            msg = (f"Project {adm.project_id} has used its budget of "
                   f"${limits.budget_usd:.2f} for this {limits.period}; it resets in {end}.")
        else:
            msg = (f"Project {adm.project_id} has used its {name} quota for this "
                   f"{limits.period} (limit {op.limit}); it resets in {end}.")
        return QuotaExceededError(msg, headers=out)
    if what == "concurrent":
        msg = f"Too many concurrent requests for {who}: limit {op.limit}."
    elif retry_ms == NEVER:
        msg = (f"Request too large for {who}: {op.cost} tokens requested, the limit is "
               f"{op.limit} tokens per minute.")
    else:
        unit = "requests" if what == "rpm" else "tokens"
        msg = (f"Rate limit reached for {unit} per minute ({what}) on {who}: limit "
               f"{op.limit}, remaining {res.remaining}, requested {op.cost}. "
               f"Please try again in {duration(retry_ms)}.")
    return RateLimitError(msg, headers=out)
