"""Admit a request before the provider call, settle it after; OpenAI's 429s and headers.

    admission = await limits.admit(project_id, key_id, estimated_prompt_tokens)  # may raise 429
    ...call the provider...
    await limits.settle(admission, real_tokens, cost_usd)  # TPM reconciliation, spend, release
    headers += limits.headers(admission)                   # x-ratelimit-* on every response
    await limits.close()                                   # at shutdown: flush deferred deltas

One `Counters.apply` batch (one Redis round trip) per request. Admit's batch checks every
limit. Settle's deltas (real tokens - estimate, spend) need no answer, so settle defers
them in-process per counter key, and the next admit of the same project carries them in
its own batch as ADJUST ops, applied before its checks. A timer flushes what no admit
carried within `flush_interval_s` (0.2 s), and `close()` flushes at shutdown. Only a
request holding a concurrency lease settles at once (the slot must be free now), taking
its project's pending deltas along. On a shared backend, rates-only callers are admitted
from capacity this worker took ahead (`prefetch.py`): no round trip per request. See
docs/limits.md.
"""

from __future__ import annotations

import functools
import itertools
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from watchllm import core, metrics
from watchllm.env.base import Counters, CountersUnavailable
from watchllm.errors import ServiceUnavailableError
from watchllm.limits import responses
from watchllm.limits.deferred import DeferredDeltas, add
from watchllm.limits.ops import (
    ADJUST,
    CHECK,
    CONC,
    FORCE,
    NEVER,
    PEEK,
    QUOTA,
    RATE,
    RELEASE,
    MemoryLimiter,
    Op,
    Outcome,
)
from watchllm.limits.plan import (
    RATE_WINDOW_MS,
    Limits,
    Scope,
    parse_limits,
    parse_scope,
    period_bounds,
)
from watchllm.limits.prefetch import Prefetch
from watchllm.limits.reset import duration
from watchllm.metadata.refresh import RefreshingCache
from watchllm.settings import Settings

log = logging.getLogger("watchllm.limits")
_BREAKER_S = 1.0  # after a backend failure, skip it this long (no connect timeout per request)
FLUSH_INTERVAL_S = 0.2  # deferred deltas reach the shared counters within this (+ 1 call)
MAX_SETTLED_TOKENS = 1 << 53  # a settled usage count is clamped to this (core's integers)
_MICRO = 1_000_000  # budgets are counted in micro-USD: integers, exact in Lua
_ONE, _TOKENS, _AT_LEAST_ONE = 0, 1, 2  # what an op costs per request
_TOK, _USD = 1, 2  # what settle reconciles on an op
# (kind, key, limit, window_ms, cost kind, mode, name)
_Row = tuple[int, str, int, int, int, int, str]
_HEADER_NAMES: dict[str, tuple[str, str, str]] = {
    suffix: ("x-ratelimit-limit-" + unit, "x-ratelimit-remaining-" + unit,
             "x-ratelimit-reset-" + unit)
    for suffix, unit in (("rpm", "requests"), ("tpm", "tokens"))}


@dataclass(slots=True)
class _Template:
    """A caller's ops minus what changes per request (token cost, lease id, period), and
    what headers and settle need, worked out once per (project, key, Limits)."""

    limits: Limits
    rows: tuple[_Row, ...]
    names: tuple[str, ...]
    fixed: tuple[Op | None, ...]  # the op itself when it never changes (rpm: cost 1)
    reconcile: tuple[tuple[int, int], ...]  # (op index, _TOK | _USD) for settle
    has_conc: bool
    # (header names, op indices) for the request limits and the token limits present
    header_groups: tuple[tuple[tuple[str, ...], tuple[int, ...]], ...]
    simple: bool  # rates only: admit copies `fixed` and fills in the token ops
    token_rows: tuple[tuple[int, str, int, int], ...]  # (index, key, limit, window) of tpm ops
    rate_plan: core.RatePlan | None  # `simple`: the ops for RateTable.admit
    token_ops: tuple[Op, ...] = ()  # the tpm ops with cost 0: what settle_now adjusts
    # `simple`, in process: `rates.admit` with this plan bound (admit_now's one call)
    admit_rates: Callable[..., core.RateGrant | None] | None = None
    # `simple`, shared counters: this caller's prefetch state, and its slot's `take`
    prefetch: Any = None
    take_held: Callable[..., core.RateGrant | None] | None = None  # (tokens[, now])


class PlanSource(Protocol):
    """Where plans and per-key limits live (watchllm.metadata.plans.PlanStore)."""

    async def project_limits(self, project_id: str) -> dict[str, Any] | None: ...

    async def key_limits(self, key_id: str) -> dict[str, Any] | None: ...


@dataclass(slots=True)
class Admission:
    project_id: str
    key_id: str
    estimated_tokens: int = 0
    ops: Sequence[Op] = ()
    names: tuple[str, ...] = ()  # per op: "key.rpm", "project.tpm", "budget", ...
    outcome: Outcome | None = None
    degraded: bool = False  # admitted without checking: the backend was down (fail open)
    settled: bool = field(default=False)
    plan: _Template | None = None


# What admit returns: in process, rates only, the rate table's grant; else an Admission.
Admitted = Admission | core.RateGrant


def _rates_of_0_as_1(doc: Any) -> Any:
    """A stored limits document with its rpm/tpm of 0 (also under "key") read as 1."""
    if not isinstance(doc, dict):
        return doc
    return {k: 1 if k in ("rpm", "tpm") and v == 0 and not isinstance(v, bool)
            else _rates_of_0_as_1(v) if k == "key" else v for k, v in doc.items()}


def _key(project_id: str, rest: str) -> str:
    return f"wl:{{{project_id}}}:{rest}"  # hash tag: one Redis Cluster slot per project


def _strip(outcome: Outcome, n: int) -> Outcome:
    """The outcome of a batch without its first n (ADJUST) ops."""
    denied = outcome.denied - n if outcome.denied >= 0 else -1
    return Outcome(outcome.allowed, denied, outcome.now_ms, outcome.results[n:])


class LimitsService:
    def __init__(
        self,
        counters: Counters,
        settings: Settings,
        plans: PlanSource | None = None,
        clock: Callable[[], float] | None = None,  # epoch seconds; None: the backend's clock
        flush_interval_s: float = FLUSH_INTERVAL_S,
    ) -> None:
        self.counters = counters
        self.plans = plans
        self.clock = clock
        self.fail_mode = settings.limits_fail_mode
        self.lease_ms = int(settings.limits_lease_s * 1000)
        self.defaults = Scope(settings.default_rpm, settings.default_tpm,
                              settings.default_max_concurrent)
        self._limits: RefreshingCache[tuple[str, str], Limits] = RefreshingCache(
            self._read_limits, settings.key_cache_ttl_s, "limits")
        self._periods: dict[str, tuple[str, int, int]] = {}  # period -> (id, valid from, end)
        self._templates: dict[tuple[str, str], _Template] = {}
        self._down_until = 0.0
        self._leases = itertools.count()
        self._lease_prefix = f"{os.getpid()}.{id(self):x}."
        self._deferred = DeferredDeltas(self._apply_deltas, flush_interval_s)
        # In-process counters (embedded): called directly, and settle applies at once.
        self._local: MemoryLimiter | None = getattr(counters, "local_limiter", None)
        self._settle_rates = None if self._local is None else self._local.rates.settle
        # Shared counters (Redis): rates-only callers are admitted from capacity taken
        # ahead, one round trip per many requests (limits/prefetch.py).
        self._prefetch = Prefetch(self._apply_plain, settings.limits_prefetch_ms,
                                  self._lease_name, self._deferred.watch) \
            if self._local is None and settings.limits_prefetch_ms > 0 else None

    # -- limits of a caller ---------------------------------------------------------------
    def limits_now(self, project_id: str, key_id: str) -> Limits | None:
        """`limits_for` while its cached answer is fresh (None: await `limits_for`), without
        a coroutine: the per-request case."""
        key = (project_id, key_id)
        entry = self._limits.entries.get(key)  # peek() inlined while no reload is due
        if entry is not None and time.monotonic() < entry[1]:
            return entry[0]
        return self._limits.peek(key)

    async def limits_for(self, project_id: str, key_id: str) -> Limits:
        """The caller's limits: plan + key override + defaults, cached `key_cache_ttl_s`
        and read again in the background before then (metadata/refresh.py). One Limits
        object while they do not change: its template (and prefetch) stays valid."""
        return await self._limits.get((project_id, key_id))

    async def _read_limits(self, caller: tuple[str, str]) -> Limits:
        project_id, key_id = caller
        plan_doc = key_doc = None
        if self.plans is not None:
            plan_doc = await self.plans.project_limits(project_id)
            key_doc = await self.plans.key_limits(key_id)
        try:
            plan, own = parse_limits(plan_doc), parse_scope(key_doc)
        except Exception:  # stored documents are validated on write; never fail a request
            try:  # written before rates of 0 were refused: the nearest rate, 1 per minute
                plan, own = parse_limits(_rates_of_0_as_1(plan_doc)), \
                    parse_scope(_rates_of_0_as_1(key_doc))
                log.warning("limits stored for %s/%s have a rate of 0 (no longer accepted); "
                            "read as 1 per minute: save them again", project_id, key_id)
            except Exception:
                log.warning("invalid limits stored for %s/%s; using defaults", project_id,
                            key_id)
                plan, own = Limits(), Scope()
        return Limits(plan.project, own.over(plan.key).over(self.defaults), plan.budget_usd,
                      plan.max_requests, plan.max_tokens, plan.period)

    def forget(self, project_id: str | None = None) -> None:
        """Drop cached limits (all, or one project's) after a plan change on this worker."""
        if project_id is None:
            self._limits.clear()
        else:
            self._limits.forget_where(lambda caller: caller[0] == project_id)
        self._drop_templates()

    def _drop_templates(self) -> None:
        """Forget every template, and the one-call admission of the Limits objects they
        gave one (it would go on taking from a prefetch slot no template owns any more)."""
        for template in self._templates.values():
            object.__setattr__(template.limits, "admit_at_once", None)
            object.__setattr__(template.limits, "settle_at_once", None)
        self._templates.clear()

    # -- admit ----------------------------------------------------------------------------
    async def admit(self, project_id: str, key_id: str, estimated_prompt_tokens: int = 0,
                    limits: Limits | None = None, _asks: int = 3, *,
                    asked: bool = False) -> Admitted:
        """Check and count one request; raises RateLimitError (429) when over a limit.

        The batch also carries the project's deferred settle deltas (applied first).
        `asked`: the caller has just asked `admit_now` or `limits.admit_at_once`, which
        said None; they are not asked again (a prefetch would count a second miss)."""
        if limits is None:
            if project_id == "*":  # the admin key is not limited
                return Admission(project_id, key_id)
            limits = await self.limits_for(project_id, key_id)
        if limits.unlimited:
            return Admission(project_id, key_id)
        tokens = max(int(estimated_prompt_tokens), 0)
        now_ms = None if self.clock is None else int(self.clock() * 1000)
        template = self._templates.get((project_id, key_id))
        if template is None or template.limits is not limits:
            template = self._template(project_id, key_id, limits)
            asked = False  # without a template, admit_now answered nothing (nor set up)
        if not asked and (fast := self.admit_now(project_id, key_id, tokens, limits)) is not None:
            return fast
        # Not in process, not rates only, or denied (nothing written): the general path
        # decides (again: the same answer) and explains a 429.
        local = self._local
        ops = self._admit_ops(template, tokens, now_ms)
        admission = Admission(project_id, key_id, tokens, ops, template.names, None, False,
                              False, template)
        outcome: Outcome | None
        # With prefetch, the batch also counts each bucket's registered prefetches (a PEEK
        # that never fails): a denial then knows at once whether to wait for them.
        sent = ops if self._prefetch is None or not template.simple \
            else [*ops, *self._prefetch.registrations(template)]
        if local is not None:
            outcome = local.apply_now(ops, now_ms)
        elif (pending := self._deferred.take(project_id)) is None:
            if time.monotonic() >= self._down_until:  # _apply inlined: the common case
                try:
                    outcome = await self.counters.apply(sent, now_ms)
                except (CountersUnavailable, TimeoutError, OSError) as exc:
                    outcome = self._unavailable(exc, admission)
            else:
                outcome = self._unavailable(None, admission)
        else:
            try:
                outcome = await self._apply([*pending.values(), *sent], now_ms, admission)
            except ServiceUnavailableError:  # fail closed: keep the deltas for later
                self._deferred.restore(project_id, pending)
                raise
            if outcome is None:
                self._deferred.restore(project_id, pending)
            else:
                outcome = _strip(outcome, len(pending))
        if outcome is None:
            return admission  # fail open
        registered = outcome.results[len(ops):]
        if registered:
            outcome = Outcome(outcome.allowed, outcome.denied, outcome.now_ms,
                              outcome.results[:len(ops)])
        admission.outcome = outcome
        if not outcome.allowed:
            admission.settled = True  # nothing was written, nothing to settle
            if _asks > 1 and self._prefetch is not None and registered \
                    and outcome.results[outcome.denied].retry_ms != NEVER \
                    and await self._prefetch.held(ops[outcome.denied].key,
                                                  registered[outcome.denied]):
                # Capacity held ahead (here or by another worker) comes back: ask again.
                return await self.admit(project_id, key_id, estimated_prompt_tokens, limits,
                                        _asks - 1)
            raise responses.rejection(admission, outcome, limits)
        return admission

    def admit_now(self, project_id: str, key_id: str, estimated_prompt_tokens: int,
                  limits: Limits) -> Admitted | None:
        """`admit` without a coroutine, when it can answer at once: counters in this process,
        a rates-only caller seen before with these limits, a request within them. None:
        await `admit` (which also builds the caller's template and raises the 429).
        In process, the answer is the rate table's own `RateGrant` (no Python object per
        bucket or per admission field)."""
        template = self._templates.get((project_id, key_id))
        if template is None or template.limits is not limits:
            return None
        # Per request: conditionals, not max()/int() (each a call with argument parsing).
        tokens = estimated_prompt_tokens if estimated_prompt_tokens > 0 else 0
        if (admit := template.admit_rates) is not None:  # in process
            clock = self.clock  # None: the table reads the system clock itself
            return admit(tokens) if clock is None else admit(tokens, int(clock() * 1000))
        if (take := template.take_held) is not None:
            # Shared counters: from this worker's prefetched capacity, in one call.
            return take(tokens, time.monotonic())
        if template.rate_plan is not None and self._prefetch is not None:
            self._prefetch.attach(template, project_id, tokens)  # first seen: set it up
            self._at_once(project_id, key_id, limits, template.take_held,
                          template.prefetch.slot.settle)
        return None

    def _at_once(self, project_id: str, key_id: str, limits: Limits, admit: Any,
                 settle: Any) -> None:
        """Give `limits` its `admit_at_once` and `settle_at_once` when it is the object
        this service caches for this caller (so no other caller shares it) and time is the
        system's."""
        entry = self._limits.entries.get((project_id, key_id))
        if admit is not None and self.clock is None and entry is not None \
                and entry[0] is limits:
            object.__setattr__(limits, "settle_at_once", settle)
            object.__setattr__(limits, "admit_at_once", admit)

    def _template(self, project_id: str, key_id: str, limits: Limits) -> _Template:
        """Cached per (project, key) while the Limits object is the same: building key
        strings and ops per request costs more than the in-process check itself."""
        rows: list[_Row] = []
        for scope_name, scope, prefix in (("key", limits.key, f"k:{key_id}:"),
                                          ("project", limits.project, "")):
            if scope.rpm is not None:
                rows.append((RATE, _key(project_id, prefix + "rpm"), scope.rpm, RATE_WINDOW_MS,
                             _ONE, CHECK, scope_name + ".rpm"))
            if scope.tpm is not None:
                rows.append((RATE, _key(project_id, prefix + "tpm"), scope.tpm, RATE_WINDOW_MS,
                             _TOKENS, CHECK, scope_name + ".tpm"))
            if scope.max_concurrent is not None:
                rows.append((CONC, _key(project_id, prefix + "conc"), scope.max_concurrent,
                             self.lease_ms, _ONE, CHECK, scope_name + ".concurrent"))
        # Quota keys get the period id appended per request.
        if limits.max_requests is not None:
            rows.append((QUOTA, _key(project_id, "q:req:"), limits.max_requests, 0, _ONE, CHECK,
                         "requests"))
        if limits.max_tokens is not None:
            rows.append((QUOTA, _key(project_id, "q:tok:"), limits.max_tokens, 0, _AT_LEAST_ONE,
                         CHECK, "tokens"))
        if limits.budget_usd is not None:  # spend < budget: the cost is only known at settle
            rows.append((QUOTA, _key(project_id, "q:usd:"), round(limits.budget_usd * _MICRO), 0,
                         _ONE, PEEK, "budget"))
        names = tuple(r[6] for r in rows)
        fixed = tuple(Op(RATE, r[1], r[2], r[3]) if r[0] == RATE and r[4] == _ONE else None
                      for r in rows)
        reconcile = tuple((i, _TOK if n.endswith("tpm") or n == "tokens" else _USD)
                          for i, n in enumerate(names)
                          if n.endswith("tpm") or n in ("tokens", "budget"))
        groups = tuple((_HEADER_NAMES[suffix], idx) for suffix in ("rpm", "tpm")
                       if (idx := tuple(i for i, n in enumerate(names) if n.endswith(suffix))))
        simple = all(r[0] == RATE for r in rows)
        token_rows = tuple((i, r[1], r[2], r[3]) for i, r in enumerate(rows)
                           if r[0] == RATE and r[4] == _TOKENS)
        rate_plan = core.RatePlan([(r[1], r[2], r[3], r[4] == _TOKENS) for r in rows],
                                  [(names, list(idx)) for names, idx in groups]) \
            if simple and rows else None
        template = _Template(limits, tuple(rows), names, fixed, reconcile,
                             any(r[0] == CONC for r in rows), groups, simple, token_rows,
                             rate_plan, tuple(Op(RATE, r[1], r[2], r[3], 0) for r in token_rows),
                             None if rate_plan is None or self._local is None
                             else functools.partial(self._local.rates.admit, rate_plan))
        if len(self._templates) > 100_000:
            self._drop_templates()
        self._templates[(project_id, key_id)] = template
        self._at_once(project_id, key_id, limits, template.admit_rates, self._settle_rates)
        return template

    def _admit_ops(self, template: _Template, tokens: int, now_ms: int | None) -> list[Op]:
        if template.simple:  # rates only (the common default: key rpm + tpm)
            fixed: list[Any] = list(template.fixed)
            for i, key, limit, window in template.token_rows:
                fixed[i] = Op(RATE, key, limit, window, tokens)
            return fixed
        ops: list[Op] = []
        lease = pid = ""
        end = 0
        for (kind, key, limit, window, cost_kind, mode, _), op in zip(
                template.rows, template.fixed, strict=True):
            if op is not None:
                ops.append(op)
                continue
            cost = 1 if cost_kind == _ONE else tokens if cost_kind == _TOKENS else max(tokens, 1)
            if kind == RATE:
                ops.append(Op(RATE, key, limit, window, cost))
            elif kind == CONC:
                lease = lease or self._lease_name()
                ops.append(Op(CONC, key, limit, window, 1, CHECK, lease))
            else:
                if not pid:
                    pid, end = self._period(template.limits.period, now_ms)
                ops.append(Op(QUOTA, key + pid, limit, end, cost, mode))
        return ops

    def _period(self, period: str, now_ms: int | None) -> tuple[str, int]:
        now = now_ms if now_ms is not None else int(time.time() * 1000)
        hit = self._periods.get(period)
        if hit is not None and hit[1] <= now < hit[2]:
            return hit[0], hit[2]
        pid, end = period_bounds(period, now / 1000)
        self._periods[period] = (pid, now, end)
        return pid, end

    async def _apply(self, ops: list[Op], now_ms: int | None,
                     admission: Admission | None) -> Outcome | None:
        """One round trip; None when the backend is down and limits fail open."""
        if time.monotonic() >= self._down_until:
            try:
                return await self.counters.apply(ops, now_ms)
            except (CountersUnavailable, TimeoutError, OSError) as exc:
                return self._unavailable(exc, admission)
        return self._unavailable(None, admission)

    async def _apply_plain(self, ops: list[Op], project_id: str) -> Outcome | None:
        """`_apply` for the prefetch's batches, which carry the project's deferred deltas
        like an admit's (restored when the backend is down)."""
        now_ms = None if self.clock is None else int(self.clock() * 1000)
        carried = self._deferred.take(project_id)
        if not carried:
            return await self._apply(ops, now_ms, None)
        outcome = await self._apply([*carried.values(), *ops], now_ms, None)
        if outcome is None:
            self._deferred.restore(project_id, carried)
            return None
        return _strip(outcome, len(carried))

    def _lease_name(self) -> str:
        return self._lease_prefix + str(next(self._leases))

    async def _apply_deltas(self, ops: list[Op]) -> bool:
        """Deferred deltas on their own (the flush); False when not applied."""
        now_ms = None if self.clock is None else int(self.clock() * 1000)
        return await self._apply(ops, now_ms, None) is not None

    def _unavailable(self, exc: Exception | None,
                     admission: Admission | None) -> Outcome | None:
        """The backend failed (exc) or is being skipped (None): fail open or closed."""
        if exc is not None:
            self._down_until = time.monotonic() + _BREAKER_S
            log.warning("limits backend unavailable (%s); failing %s", exc, self.fail_mode)
        metrics.limits_unavailable(self.fail_mode)
        if admission is None:
            return None  # settle/flush: the caller keeps its deltas for the next try
        if self.fail_mode == "closed":
            raise ServiceUnavailableError(
                "Rate limits cannot be checked right now (counters backend unreachable).",
                code="limits_unavailable", headers={"retry-after": "1"})
        admission.degraded = True
        admission.ops, admission.names = [], ()
        return None

    # -- settle ---------------------------------------------------------------------------
    async def settle(self, admission: Admitted, real_tokens: int, cost_usd: float) -> None:
        """Reconcile TPM and token quota to the real usage, add spend, release the slot.

        Deltas are deferred (the next admit or the flush timer applies them); a held
        concurrency lease is released at once, in one batch with the project's deltas.
        Never raises: it runs after the response. Idempotent per admission.
        """
        if isinstance(admission, core.RateGrant):
            self.settle_now(admission, int(real_tokens))
            return
        if admission.settled or admission.degraded or not admission.ops:
            admission.settled = True
            return
        admission.settled = True
        template = admission.plan
        if template is None:  # not made by admit(); nothing to reconcile
            return
        ops = admission.ops
        project_id = admission.project_id
        if self._local is not None:  # in this process: no round trip to save, apply now
            self._settle_local(ops, template, real_tokens, cost_usd)
            return
        # Deltas go straight into the project's pending ADJUST ops (summed per key); a
        # request holding a lease takes them along in its release batch below.
        pending = self._deferred.of(project_id)
        for i, what in template.reconcile:
            op = ops[i]
            if what == _TOK:
                # op.cost is what admit charged: the estimate (the token quota charges >= 1).
                delta = max(int(real_tokens), 0) - op.cost
            else:
                delta = max(round(cost_usd * _MICRO), 0)
            if delta:
                add(pending, op, delta)
        if not template.has_conc:
            self._deferred.done(project_id)
            return
        carried = self._deferred.take(project_id) or {}
        releases = [Op(CONC, op.key, op.limit, op.window_ms, 0, RELEASE, op.member)
                    for op in ops if op.kind == CONC]
        now_ms = None if self.clock is None else int(self.clock() * 1000)
        if await self._apply([*carried.values(), *releases], now_ms, None) is None and carried:
            self._deferred.restore(project_id, carried)  # the lease expires on its own

    def settle_now(self, admission: core.RateGrant, real_tokens: int) -> None:
        """`settle` of an admission made by `admit_now`: in process (TPM reconciliation
        written at once, by the rate table) or from a prefetch (shared counters: deferred
        like `settle`'s). Synchronous: no coroutine per request. Once per admission.
        `real_tokens`: an int (usage counts are; `settle` converts for other callers)."""
        # Clamped into core's integers; past 2^53 tokens the bucket's own clamp (16 full
        # windows at most) gives the same state.
        if real_tokens > MAX_SETTLED_TOKENS:
            real_tokens = MAX_SETTLED_TOKENS
        if (settle := self._settle_rates) is not None:  # in process: the table's own
            clock = self.clock
            if clock is None:
                settle(admission, real_tokens)
            else:
                settle(admission, real_tokens, int(clock() * 1000))
            return
        # Prefetched: the slot adds the reconciliation to what rides on the next round
        # trip, as in `settle`.
        admission.owner.settle(admission, real_tokens)

    def _settle_local(self, ops: Sequence[Op], template: _Template, real_tokens: int,
                      cost_usd: float) -> None:
        batch: list[Op] = []
        for i, what in template.reconcile:
            op = ops[i]
            delta = (max(int(real_tokens), 0) - op.cost if what == _TOK
                     else max(round(cost_usd * _MICRO), 0))
            if delta:
                batch.append(Op(op.kind, op.key, op.limit, op.window_ms, delta, ADJUST))
        if template.has_conc:
            batch += [Op(CONC, op.key, op.limit, op.window_ms, 0, RELEASE, op.member)
                      for op in ops if op.kind == CONC]
        if batch and self._local is not None:
            now_ms = None if self.clock is None else int(self.clock() * 1000)
            self._local.adjust(batch, now_ms)

    def pending(self) -> int:
        """How many counter keys have deferred deltas not yet applied (tests, metrics)."""
        return self._deferred.count()

    async def flush(self) -> None:
        """Apply every deferred delta now (one batch per project)."""
        await self._deferred.flush()

    async def close(self) -> None:
        """At shutdown, before the counters backend closes: apply every deferred delta."""
        self._down_until = 0.0  # one last try even if the breaker is open
        if self._prefetch is not None:
            await self._prefetch.close()
        await self._deferred.close()

    async def usage(self, project_id: str) -> dict[str, Any]:
        """The current period's quota use of a project (only the quotas its plan sets)."""
        limits = await self.limits_for(project_id, "")
        now_ms = None if self.clock is None else int(self.clock() * 1000)
        quotas = Limits(budget_usd=limits.budget_usd, max_requests=limits.max_requests,
                        max_tokens=limits.max_tokens, period=limits.period)
        template = self._template(project_id, "", quotas)
        ops, names = self._admit_ops(template, 0, now_ms), template.names
        out: dict[str, Any] = {"period": limits.period}
        if not ops:
            return out
        # FORCE with cost 0 reads without a check (a PEEK would fail once over the limit).
        peek = [Op(QUOTA, op.key, op.limit, op.window_ms, 0, FORCE) for op in ops]
        carried = self._deferred.take(project_id) or {}  # this worker's deferred deltas first
        outcome = await self._apply([*carried.values(), *peek], now_ms, None)
        if outcome is None:
            self._deferred.restore(project_id, carried)
            raise ServiceUnavailableError("Usage cannot be read right now (counters backend "
                                          "unreachable).", code="limits_unavailable")
        outcome = _strip(outcome, len(carried))
        out["period_id"] = ops[0].key.rsplit(":", 1)[1]
        for op, name, res in zip(ops, names, outcome.results, strict=True):
            used: float = op.limit - res.remaining
            limit: float = op.limit
            if name == "budget":
                used, limit = used / _MICRO, limit / _MICRO
            out[name] = {"used": used, "limit": limit, "exhausted": res.remaining <= 0,
                         "resets_in": duration(res.reset_ms)}
        return out

    # OpenAI's x-ratelimit-* for the tightest request and token limits (none if unlimited).
    headers = staticmethod(responses.headers)
