"""Settle deltas waiting for a ride to the counters backend (see limits/service.py).

Per project, the summed ADJUST op of each counter key. The next admit of a project takes
its deltas into its own batch; a timer applies what no admit took within `interval_s`;
`close()` applies the rest at shutdown. A prefetched caller's settles sum their delta in
its slot (`core.HeldSlot`, no Python per request); a watched slot's sum joins the
project's deltas whenever they are read. `apply` is the service's one-round-trip call:
it answers False when the backend could not take the batch, and the deltas wait again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from watchllm.limits.ops import ADJUST, Op

if TYPE_CHECKING:
    from watchllm import core

log = logging.getLogger("watchllm.limits")
Pending = dict[str, Op]  # counter key -> the ADJUST op carrying its summed delta


def merge(into: Pending, ops: Pending | list[Op]) -> None:
    """Add deltas to pending ones (ADJUST ops of the same key sum)."""
    for op in ops.values() if isinstance(ops, dict) else ops:
        add(into, op, op.cost)


def add(into: Pending, op: Op, delta: int) -> None:
    """Add `delta` to the pending ADJUST op of `op`'s key (made from `op` if none)."""
    have = into.get(op.key)
    if have is None:
        into[op.key] = Op(op.kind, op.key, op.limit, op.window_ms, delta, ADJUST)
    else:
        have.cost += delta
        have.limit = op.limit  # the newest plan's limit


class DeferredDeltas:
    def __init__(self, apply: Callable[[list[Op]], Awaitable[bool]],
                 interval_s: float) -> None:
        self.apply = apply
        self.interval_s = interval_s
        self._pending: dict[str, Pending] = {}  # project -> deferred deltas
        # project -> slots with a delta (each with the token ops it applies to)
        self._slots: dict[str, dict[core.HeldSlot, tuple[Op, ...]]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._flushing: asyncio.Task[None] | None = None

    def __bool__(self) -> bool:
        return bool(self._pending) or bool(self._slots)

    def watch(self, project_id: str, slot: core.HeldSlot, ops: tuple[Op, ...]) -> None:
        """`slot` holds a token delta for each of `ops` (its `on_pending`): collected with
        the project's other deltas, by the next admit or the timer."""
        self._slots.setdefault(project_id, {})[slot] = ops
        if self._timer is None:
            self._schedule()

    def _collect(self, project_id: str) -> None:
        """Move the project's watched slots' deltas into its pending ops."""
        slots = self._slots.pop(project_id, None)
        if not slots:
            return
        pending = self.of(project_id)
        for slot, ops in slots.items():
            delta = slot.drain_pending()
            if delta:
                for op in ops:
                    add(pending, op, delta)
        if not pending:
            del self._pending[project_id]

    def _collect_all(self) -> None:
        for project_id in list(self._slots):
            self._collect(project_id)

    def of(self, project_id: str) -> Pending:
        """The project's pending deltas, to add to (kept; `done()` after adding)."""
        pending = self._pending.get(project_id)
        if pending is None:
            pending = self._pending[project_id] = {}
        return pending

    def done(self, project_id: str) -> None:
        """After adding: drop an empty entry, or make sure the timer will apply it."""
        if not self._pending.get(project_id):
            self._pending.pop(project_id, None)
        elif self._timer is None:
            self._schedule()

    def take(self, project_id: str) -> Pending | None:
        """The project's deltas, removed: the caller's batch carries them (or restores)."""
        if self._slots:
            self._collect(project_id)
        return self._pending.pop(project_id, None) if self._pending else None

    def restore(self, project_id: str, deltas: Pending) -> None:
        """Deltas a failed batch did not apply: pending again, for the next try."""
        pending = self._pending.get(project_id)
        if pending is None:
            self._pending[project_id] = deltas
        else:
            merge(pending, deltas)
        if self._timer is None:
            self._schedule()

    def count(self) -> int:
        """How many counter keys have deltas not yet applied."""
        self._collect_all()
        return sum(len(p) for p in self._pending.values())

    def _schedule(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (sync callers): close() or the next admit applies them
            return
        self._timer = loop.call_later(self.interval_s, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.get_running_loop().create_task(self.flush())
        else:  # a flush is still running (a slow backend): tick again, or a watched slot,
            self._schedule()  # which asks for the timer only once, could wait for good

    async def flush(self) -> None:
        """Apply every deferred delta now: one batch per project, concurrently.

        Deltas a failed batch could not apply stay pending (retried by the timer)."""
        self._collect_all()
        work, self._pending = self._pending, {}
        if not work:
            return

        async def one(project_id: str, deltas: Pending) -> None:
            if not await self.apply(list(deltas.values())):
                self.restore(project_id, deltas)

        await asyncio.gather(*(one(p, d) for p, d in work.items()))

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    async def close(self) -> None:
        """Apply everything pending (after a running flush); what cannot be is logged."""
        self._cancel_timer()
        if self._flushing is not None and not self._flushing.done():
            await self._flushing
        await self.flush()
        self._cancel_timer()
        if self:
            log.warning("limits: %d deferred deltas lost at shutdown (backend unavailable)",
                        self.count())
            self._pending, self._slots = {}, {}
