"""Rate capacity taken from a shared backend ahead of the requests that will use it.

On Redis every request of a rates-only caller (rpm/tpm, the common plan) used to wait for
its own script call. Far from the limit that call always says yes, so a worker instead
takes a *prefetch*: one batch charges the buckets for `size` requests and `size` times the
average estimate in tokens at once, and the next requests are admitted in this process
against it, with no I/O and no suspension. One round trip then serves tens to hundreds of
requests. What keeps the limit exact:

- **Never over:** a prefetch is charged to the shared buckets before any request uses it
  (GCRA, all-or-nothing), so the requests admitted from it were counted already.
- **Only far from the limit:** a prefetch is granted only while the buckets could take
  `FLOOR + 1` times it (a PEEK of that cost in the same batch). Near the limit every
  request takes the exact per-request path, as before.
- **Never under:** capacity a worker holds but does not use must not make another worker
  answer 429. Each prefetch is registered in a set per bucket (`<bucket>:held`, a CONC
  lease), and returned (refund + release, one batch) when it is replaced or `ttl_ms`
  after its grant. A request denied on a bucket that has registered prefetches waits
  for them to come back and asks again (`LimitsService.admit`); only a denial with none
  outstanding is a 429. A worker that dies keeps its prefetch counted until the
  registration expires (`ttl_ms + HOLD_GRACE_MS`): stricter, never looser.

The price: a prefetched request is charged up to `ttl_ms` before it arrives (the bucket's
refill starts that much earlier), `x-ratelimit-remaining-*` on a prefetched request also
counts this worker's unused prefetch, and a request denied next to the limit can wait up
to `ttl_ms` for other workers' prefetches. See docs/limits.md, "Prefetched capacity".
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from watchllm import core, metrics
from watchllm.limits.ops import (
    CHECK,
    CONC,
    GEN,
    GRANT,
    PEEK,
    RATE,
    REFUND,
    RELEASE,
    Op,
    OpResult,
    Outcome,
)

if TYPE_CHECKING:
    from watchllm.limits.service import _Template

log = logging.getLogger("watchllm.limits")

FLOOR = 8  # grant only while the buckets could take FLOOR more prefetches of this size
MIN_SIZE, MAX_SIZE = 2, 4096  # requests per prefetch
HOLD_GRACE_MS = 2000  # a registration outlives its prefetch by this (a slow return)
_HUGE = 1 << 40  # the held set's "limit": registering never fails
_TOKENS = 1  # a template row's cost kind (service._TOKENS)
_OPS = 4  # a grant's ops per row: PEEK (room for FLOOR more), GRANT, the registration, GEN

# (ops, project): one batch, carrying the project's deferred deltas; None: backend down
Apply = Callable[[list[Op], str], Awaitable["Outcome | None"]]
# (project, slot, its token ops): the slot has settled deltas to send (DeferredDeltas.watch)
Watch = Callable[[str, core.HeldSlot, tuple[Op, ...]], None]


def held_key(bucket: str) -> str:
    return bucket + ":held"


# Per header group (requests, tokens) of a grant, worked out once: the limit's header
# as it is sent, the names of the two that change, the tightest row's remaining and
# reset_ms right after the grant, whether it counts tokens, and its ms per unit.
_Group = tuple[tuple[str, str], str, str, int, int, bool, float]


@dataclass(slots=True)
class _Grant:
    member: str
    # What is left of it (requests, tokens; monotonic time it is usable until) and the
    # per-request admission from it, in Rust (`core.HeldRates`; its twin on Pyodide).
    held: core.HeldRates
    rows: tuple[tuple[int, str, int, int, int, int, str], ...]
    refunds: tuple[str, ...]  # per row: the REFUND op's member (ops.py)
    timer: asyncio.TimerHandle | None = None
    returning: asyncio.Task[None] | None = None  # its return, once started


class _Caller:
    """One (project, key) template's prefetch state. Its `slot` (Rust) is what requests
    take from and settle to; `grant` and `busy` are kept there, where they are read."""

    __slots__ = ("_grant", "off_until", "project", "size", "slot", "tok_avg")

    def __init__(self, project: str, slot: core.HeldSlot, tok_avg: float) -> None:
        self.project = project
        self.slot = slot
        self._grant: _Grant | None = None
        self.size = 16
        self.tok_avg = tok_avg
        self.off_until = 0.0  # after a refused grant: per-request only until then

    @property
    def grant(self) -> _Grant | None:
        return self._grant

    @grant.setter
    def grant(self, grant: _Grant | None) -> None:
        self._grant = grant
        self.slot.held = None if grant is None else grant.held

    @property
    def busy(self) -> bool:
        """A grant is on its way."""
        return self.slot.busy

    @busy.setter
    def busy(self, busy: bool) -> None:
        self.slot.busy = busy


class Prefetch:
    def __init__(self, apply: Apply, ttl_ms: int, names: Callable[[], str],
                 watch: Watch) -> None:
        self.apply = apply  # LimitsService._apply_plain
        self.watch = watch  # DeferredDeltas.watch: a slot's settled deltas wait for a ride
        self.ttl_s = ttl_ms / 1000
        self.hold_ms = ttl_ms + HOLD_GRACE_MS
        self._names = names  # a fresh, process-unique registration id
        self._live: dict[str, tuple[_Grant, _Caller]] = {}  # member -> its grant
        self.granted = 0  # grants made (tests, docs)
        self.missed = 0  # requests that found no prefetch: per-request path (tests, docs)
        self.closed = False  # after close(): no new grants
        self._tasks: set[asyncio.Task[Any]] = set()  # grants and returns on their way

    # -- per request: the slot (Rust) admits and settles; these run when it calls ---------
    def attach(self, template: _Template, project_id: str, tokens: int) -> None:
        """Give a rates-only caller's template, seen for the first time, its prefetch: the
        slot its requests are admitted from (`template.take_held`) and settled to (each
        grant's owner), and ask for the first grant. This request takes the per-request
        path, as every request does that finds no grant (`missed`)."""

        def on_miss(now: float) -> None:
            self.missed += 1
            self._refill(template, caller, now)

        def on_low(now: float) -> None:  # half used, or half its time gone: the next
            self._refill(template, caller, now)  # grant lands before this one runs out

        def on_pending() -> None:
            self.watch(caller.project, slot, template.token_ops)

        slot = core.HeldSlot(on_miss, on_low, on_pending)
        caller = template.prefetch = _Caller(project_id, slot, float(tokens))
        if any(r[2] < (FLOOR + 1) * MIN_SIZE for r in template.rows):
            caller.off_until = float("inf")  # too small a limit: never granted
        template.take_held = slot.take
        on_miss(time.monotonic())

    # -- grants and returns ---------------------------------------------------------------
    def _refill(self, template: _Template, caller: _Caller, now: float) -> None:
        if caller.busy or now < caller.off_until or self.closed:
            return
        self._spawn(self._grant(template, caller))
        caller.busy = True

    def _spawn(self, work: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _grant(self, template: _Template, caller: _Caller) -> None:
        try:
            old = caller.grant
            if old is not None:
                last = old.held
                if last.req * 2 < last.size:  # used most of it: grow
                    caller.size = min(caller.size * 2, MAX_SIZE)
                if (used := last.size - last.req) > 0:  # the average estimate sizes the tokens
                    caller.tok_avg = (last.tokens - last.tok) / used
            size = caller.size
            tok = max(int(size * max(caller.tok_avg, 1.0) * 1.5), 1)
            member = self._names()
            ops: list[Op] = []
            for _, key, limit, window, cost_kind, _, _ in template.rows:
                n = tok if cost_kind == _TOKENS else size
                ops.append(Op(RATE, key, limit, window, n * (FLOOR + 1), PEEK))
                ops.append(Op(RATE, key, limit, window, n, GRANT))
                ops.append(Op(CONC, held_key(key), _HUGE, self.hold_ms, 1, CHECK, member))
                ops.append(Op(RATE, key, limit, window, 0, GEN))
            outcome = await self.apply(ops, caller.project)
            now = time.monotonic()
            if outcome is None or not outcome.allowed:  # near the limit, or backend down
                metrics.limits_prefetch("refused")
                caller.size = max(caller.size // 2, MIN_SIZE)
                caller.off_until = now + (self.ttl_s if caller.size > MIN_SIZE else 1.0)
                return
            self.granted += 1
            metrics.limits_prefetch("granted")
            refunds = []
            for i, (_, _, limit, window, cost_kind, _, _) in enumerate(template.rows):
                res = outcome.results[_OPS * i + 1]  # GRANT: retry_ms is the charge count
                gen = outcome.results[_OPS * i + 3]  # GEN: generation, and R in reset_ms
                n = tok if cost_kind == _TOKENS else size
                # The grant's block starts at most at D = reset * limit - n * window.
                refunds.append(f"{outcome.now_ms}:{res.retry_ms}:"
                               f"{res.reset_ms * limit - n * window}:{gen.retry_ms}:"
                               f"{gen.reset_ms}")
            held = core.HeldRates(size, tok, now, self.ttl_s, _groups(template, outcome),
                                  caller.slot)  # a request's grant is settled to its slot
            grant = _Grant(member, held, template.rows, tuple(refunds))
            if self.closed:  # shut down while it was on its way: give it straight back
                caller.grant = None
                self._live[member] = (grant, caller)
                await self._return(grant, caller.project)
                return
            grant.timer = asyncio.get_running_loop().call_later(self.ttl_s, self._expire,
                                                                grant, caller)
            self._live[member] = (grant, caller)
            caller.grant = grant
            if old is not None:
                await self._return(old, caller.project)
        except Exception:  # a background task: never let it fail silently
            log.exception("limits: prefetch grant failed")
        finally:
            caller.busy = False

    def _expire(self, grant: _Grant, caller: _Caller) -> None:
        if caller.grant is grant:
            caller.grant = None
            if grant.held.req * 2 > caller.size:  # mostly unused: smaller next time
                caller.size = max(caller.size // 2, MIN_SIZE)
        self._return(grant, caller.project)

    def _return(self, grant: _Grant, project_id: str) -> asyncio.Task[None]:
        """Refund what was not used and drop the registration, in one batch, as a task of
        its own (a caller's cancellation cannot drop it halfway); once per grant. The grant
        stays in `_live` until it is back, so `held` counts it as this worker's own."""
        if grant.returning is None:
            if grant.timer is not None:
                grant.timer.cancel()
            grant.returning = self._spawn(self._give_back(grant, project_id))
        return grant.returning

    async def _give_back(self, grant: _Grant, project_id: str) -> None:
        ops: list[Op] = []
        req, tok = grant.held.drain()  # nothing more is taken from it
        for (_, key, limit, window, cost_kind, _, _), refund in zip(grant.rows, grant.refunds,
                                                                   strict=True):
            left = tok if cost_kind == _TOKENS else req
            if left:  # only what is provably still in the bucket (ops.py, REFUND)
                ops.append(Op(RATE, key, limit, window, -left, REFUND, refund))
            ops.append(Op(CONC, held_key(key), _HUGE, self.hold_ms, 0, RELEASE, grant.member))
        metrics.limits_prefetch("returned")
        try:
            if await self.apply(ops, project_id) is None:
                log.warning("limits: a prefetch could not be returned (backend unavailable);"
                            " it counts until its registration expires")
        except Exception:  # a task of its own: never let it fail silently
            log.exception("limits: prefetch return failed")
        finally:
            self._live.pop(grant.member, None)

    # -- a denial next to the limit --------------------------------------------------------
    def registrations(self, template: _Template) -> list[Op]:
        """PEEKs, one per row of `template`, that count the prefetches registered on its
        buckets (never fail, write nothing): carried by a per-request batch, for `held`.
        Nothing for a caller whose limits are too small ever to be granted one."""
        caller = template.prefetch
        if caller is not None and caller.off_until == float("inf"):
            return []
        return [Op(CONC, held_key(r[1]), _HUGE, self.hold_ms, 0, PEEK) for r in template.rows]

    async def held(self, bucket: str, registered: OpResult) -> bool:
        """After a per-request denial on `bucket`, whose batch counted its registered
        prefetches (`registered`, from `registrations`): True when capacity may come back
        (this worker returned its own prefetch of the bucket, or another worker's is
        registered and was waited for), so the caller asks again; False: the denial is
        final."""
        own = []
        for grant, caller in list(self._live.values()):
            if any(r[1] == bucket for r in grant.rows):
                if caller.grant is grant:
                    caller.grant = None
                own.append(self._return(grant, caller.project))
        if own:  # shielded: a request that goes away does not stop the returns
            await asyncio.shield(asyncio.gather(*own))
        if _HUGE - registered.remaining > len(own):  # another worker's are out
            metrics.limits_prefetch("waited")
            await asyncio.sleep(self.ttl_s + 0.01)  # others return theirs by then
            return True
        return bool(own)

    async def close(self) -> None:
        """At shutdown: return every prefetch (before the deferred deltas are flushed)."""
        self.closed = True
        while self._tasks:  # grants on their way give themselves back (closed)
            await asyncio.gather(*self._tasks, return_exceptions=True)
        returns = []
        for grant, caller in list(self._live.values()):
            caller.grant = None
            returns.append(self._return(grant, caller.project))
        await asyncio.gather(*returns)


def _groups(template: _Template, outcome: Outcome) -> tuple[_Group, ...]:
    """The header groups of a grant: in a group every row counts the same unit, so this
    worker's unused prefetch adds the same to each, and the tightest row stays it."""
    out = []
    res, rows = outcome.results, template.rows
    for names, idx in template.header_groups:
        i = min(idx, key=lambda j: res[_OPS * j + 1].remaining)  # the GRANT op of row j
        limit, window = rows[i][2], rows[i][3]
        out.append(((names[0], str(limit)), names[1], names[2],
                    res[_OPS * i + 1].remaining, res[_OPS * i + 1].reset_ms,
                    rows[i][4] == _TOKENS, window / limit))
    return tuple(out)
