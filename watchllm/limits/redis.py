"""Limits on Redis: every check of a request in ONE EVALSHA (one round trip).

The Lua script is a port of `watchllm/limits/ops.py` (`rate`, `conc`, `quota`); the
exactness tests run both on the same traces. Redis runs a script atomically, so N workers
on M machines see one limit. The clock is Redis's own (`TIME`) unless the caller passes
`now_ms` (tests, replays), so machines with skewed clocks still agree.

All keys of a batch must hash to one slot on Redis Cluster: `LimitsService` puts the
project id in a hash tag (`wl:{proj}:...`).

    limiter = RedisLimiter(redis.asyncio.Redis(...))   # the Redis Counters adapter delegates
    outcome = await limiter.apply(ops)                 # `Counters.apply` to this
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from typing import Any

from watchllm.env.base import CountersUnavailable
from watchllm.env.selfhosted.resp import RespError
from watchllm.limits.ops import Op, OpResult, Outcome

# One EVALSHA carries every batch of one event-loop tick (`RedisLimiter` collects them).
# KEYS = the distinct keys of all ops. ARGV[1] = number of batches; ARGV[2] = space-
# separated fields: per batch "<now_ms or -> <number of ops>" ('-' = Redis TIME), then 7
# per op: key index (into KEYS) kind limit window_ms cost mode member ('-' = none). Each batch is
# all-or-nothing on its own, exactly as if it were its own script call: ADJUST ops (mode
# 4) are written as they are met (the ops after them read the new value) and kept when
# the batch is denied; every other write waits until the whole batch has passed. The
# reply is one string: per batch "allowed denied now" and 3 numbers per op. A rate bucket
# is stored as "tat_ms:remainder:limit:C:gen:R" (C: units ever charged; gen: when this
# count started; R: units ever refunded; for GRANT, GEN and REFUND, see ops.py) and kept
# HOLD ms past the time it is full again. One argument
# and one string reply instead of 6n+1 arguments and a 3n+3 array: redis-py's pure-Python
# packing and parsing cost more than the script itself. Numbers stay below 2^53
# (ops.MAX_CAPACITY), so Lua's doubles do exact integer arithmetic.
LUA = r"""
local f = {}
for field in string.gmatch(ARGV[2], '%S+') do f[#f + 1] = field end
local out = {}
local clock
local function fdiv(a, b) return math.floor(a / b) end
local function cdiv(a, b) return -math.floor(-a / b) end
local HOLD = 5000 -- ms a bucket outlives its last write: a REFUND still finds its C
local function write(w, now)
  local k = w[2]
  if w[1] == 0 then
    local dn, limit, c = math.max(w[3], 0), w[4], w[5]
    local ms = now + fdiv(dn, limit)
    redis.call('SET', k, string.format('%d:%d:%d:%d:%d:%d', ms, dn % limit, limit, c, w[6],
                                       w[7]),
               'PX', cdiv(dn, limit) + 1 + HOLD)
  elseif w[1] == 1 then
    redis.call('ZADD', k, w[3], w[4])
    redis.call('PEXPIRE', k, w[5])
  elseif w[1] == 3 then
    redis.call('ZREM', k, w[3])
  else
    redis.call('SET', k, string.format('%d', w[3]), 'PX', w[4] + 60000)
  end
end
local function batch(now, a, nops)
  local head = #out + 1
  out[head], out[head + 1], out[head + 2] = 1, -1, now
  local writes = {}
  local denied = -1
  for i = 1, nops do
    local key = KEYS[tonumber(f[a + 1])]
    local kind, limit, win = tonumber(f[a + 2]), tonumber(f[a + 3]), tonumber(f[a + 4])
    local n, mode, member = tonumber(f[a + 5]), tonumber(f[a + 6]), f[a + 7]
    a = a + 7
    local ok, rem_out, reset, retry = true, 0, 0, 0
    if kind == 0 then -- RATE (GCRA)
      local d, c, l0, gen, rf = 0, 0, 0, nil, 0
      local v = redis.call('GET', key)
      if v then
        local ms, rem, l, cs, gs, rs = string.match(
          v, '^(%-?%d+):(%d+):(%d+):?(%d*):?(%d*):?(%d*)$')
        ms, rem, l0, gen = tonumber(ms), tonumber(rem), tonumber(l), tonumber(gs)
        if ms and ms >= now then d = (ms - now) * l0 + rem end
        if gen then c, rf = tonumber(cs), tonumber(rs) or 0 end -- no generation: not trusted
      end
      local g = gen or now -- a count that starts now starts a new generation
      local cap = win * limit
      local dn = d + n * win
      if mode == 6 then -- REFUND: give back what is provably still in the bucket
        local g_now, c_g, before, gen_g, r_g = string.match(
          member, '^(%-?%d+):(%d+):(%-?%d+):(%d+):(%d+)$')
        g_now, c_g, before = tonumber(g_now), tonumber(c_g), tonumber(before)
        gen_g, r_g = tonumber(gen_g), tonumber(r_g)
        local r = 0
        if g_now and gen and gen == gen_g and l0 == limit and now - g_now <= HOLD - 1000
            and c >= c_g and rf >= r_g then
          local bound = d - (c - c_g) * win
                        - math.max(before - (now - g_now) * limit - (rf - r_g) * win, 0)
          if bound > 0 then r = math.max(math.min(-n, fdiv(bound, win)), 0) end
        end
        dn = d - r * win
        rem_out, reset, retry = fdiv(cap - math.min(dn, cap), win), cdiv(dn, limit), r
        if r > 0 then write({0, key, dn, limit, c, g, rf + r}, now) end
      elseif mode == 7 then -- GEN: reads the count's generation, never fails, writes nothing
        rem_out, reset, retry = fdiv(cap - math.min(d, cap), win), rf, g
      elseif mode == 2 or mode == 4 then -- FORCE, ADJUST (written at once)
        -- C counts what was added; when the debt cap cuts an addition, 16 windows more,
        -- so no grant from before can be refunded (ops.py, REFUND)
        local added = 0
        if dn > cap * 16 then dn, added = cap * 16, 16 * limit end
        if dn < 0 then dn = 0 end
        added = added + cdiv(math.max(dn - d, 0), win)
        rem_out, reset = fdiv(cap - math.min(dn, cap), win), cdiv(dn, limit)
        local w = {0, key, dn, limit, c + added, g, rf}
        if mode == 4 then write(w, now) else writes[#writes + 1] = w end
      elseif dn <= cap then
        rem_out, reset = fdiv(cap - dn, win), cdiv(dn, limit)
        if mode == 0 or mode == 5 then
          writes[#writes + 1] = {0, key, dn, limit, c + n, g, rf}
        end
        if mode == 5 then retry = c + n end -- GRANT: the bucket's charge count after it
      else
        ok = false
        rem_out, reset = fdiv(math.max(cap - d, 0), win), cdiv(d, limit)
        if n > limit then retry = -1 else retry = cdiv(dn - cap, limit) end
      end
    elseif kind == 1 then -- CONC (leases in a sorted set, scored by expiry)
      redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
      if mode == 3 then -- RELEASE, deferred like every write
        local count = redis.call('ZCARD', key)
        if redis.call('ZSCORE', key, member) then count = count - 1 end
        rem_out = limit - count
        writes[#writes + 1] = {3, key, member}
      else
        local count = redis.call('ZCARD', key)
        if count < limit then
          if mode == 0 then
            writes[#writes + 1] = {1, key, now + win, member, win}
            count = count + 1
          end
          rem_out = limit - count
        else
          ok = false
          if limit <= 0 then retry = -1 else retry = 1000 end
        end
      end
    else -- QUOTA (counter of one period; win = the period's end in epoch ms)
      local value = tonumber(redis.call('GET', key) or '0')
      reset = math.max(win - now, 0)
      if mode == 2 or mode == 4 then
        value = math.max(value + n, 0)
        rem_out = math.max(limit - value, 0)
        local w = {2, key, value, reset}
        if mode == 4 then write(w, now) else writes[#writes + 1] = w end
      elseif value + n <= limit then
        if mode == 0 then
          writes[#writes + 1] = {2, key, value + n, reset}
          rem_out = limit - value - n
        else
          rem_out = limit - value
        end
      else
        ok = false
        rem_out = math.max(limit - value, 0)
        if n > limit then retry = -1 else retry = reset end
      end
    end
    if not ok and denied < 0 then denied = i - 1 end
    out[#out + 1] = rem_out
    out[#out + 1] = reset
    out[#out + 1] = retry
  end
  if denied >= 0 then
    out[head], out[head + 1] = 0, denied
  else
    for _, w in ipairs(writes) do write(w, now) end
  end
end
local a = 0
for _ = 1, tonumber(ARGV[1]) do
  local now, nops = tonumber(f[a + 1]), tonumber(f[a + 2])
  if not now then
    if not clock then
      local t = redis.call('TIME')
      clock = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
    end
    now = clock
  end
  batch(now, a + 2, nops)
  a = a + 2 + 7 * nops
end
for j = 1, #out do out[j] = string.format('%d', out[j]) end
return table.concat(out, ' ')
"""
SHA = hashlib.sha1(LUA.encode()).hexdigest()


Batch = tuple[Sequence[Op], "int | None"]  # one request's ops and its clock
_Joined = tuple[Sequence[Op], "int | None", "asyncio.Future[Outcome]"]


def encode(batches: Sequence[Batch], prefix: str = "") -> tuple[list[str], list[str]]:
    """(KEYS, ARGV); a key is sent once however many ops of the tick use it."""
    index: dict[str, int] = {}
    keys: list[str] = []
    fields: list[str] = []
    for ops, now_ms in batches:
        fields.append(f"{'-' if now_ms is None else now_ms} {len(ops)}")
        for op in ops:
            k = index.get(op.key)
            if k is None:
                keys.append(prefix + op.key)
                k = index[op.key] = len(keys)
            fields.append(f"{k} {op.kind} {op.limit} {op.window_ms} {op.cost} {op.mode} "
                          f"{op.member or '-'}")
    return keys, [str(len(batches)), " ".join(fields)]


def decode(raw: bytes | str, batches: Sequence[Batch]) -> list[Outcome]:
    v = [int(x) for x in raw.split()]
    outcomes, at = [], 0
    for ops, _ in batches:
        end = at + 3 + 3 * len(ops)
        results = tuple(OpResult(v[i], v[i + 1], v[i + 2]) for i in range(at + 3, end, 3))
        outcomes.append(Outcome(v[at] == 1, v[at + 1], v[at + 2], results))
        at = end
    return outcomes


class _RedisPy:
    """redis-py's client behind the one call the limiter needs (tools, tests)."""

    def __init__(self, client: Any) -> None:
        self.client = client

    async def execute(self, *args: Any) -> Any:
        return await self.client.execute_command(*args)


class RedisLimiter:
    """`Counters.apply` on Redis. Connection failures become `CountersUnavailable`.

    The batches of one event-loop tick go to Redis as ONE EVALSHA (still one round trip
    per request, each batch exact and all-or-nothing on its own): the first request of a
    tick schedules the send for the end of the tick, and every request just awaits its
    future — one suspension per request, and per tick one write, one timer, one reply to
    parse. `client` is anything with `async execute(*args)`; the hot path uses the lean
    pipelined client (`watchllm.env.selfhosted.resp.LeanRedis`, ~10 µs CPU per call
    against redis-py's ~95 µs), whose `submit` sends without a coroutine. A redis-py
    client is wrapped, and goes through a task per tick.
    """

    def __init__(self, client: Any, timeout_s: float = 1.0, prefix: str = "") -> None:
        self.client = client if hasattr(client, "execute") else _RedisPy(client)
        self._submit = getattr(self.client, "submit", None)
        self.timeout_s = timeout_s  # settings.limits_timeout_s: slower counts as unavailable
        self.prefix = prefix  # prepended to every key (an adapter's namespace), for free
        # Per hash tag (one script may touch one Redis Cluster slot): the requests of
        # this tick, each with its future.
        self._open: dict[str, list[_Joined]] = {}
        self._sending: set[asyncio.Task[None]] = set()

    async def apply(self, ops: Sequence[Op], now_ms: int | None = None) -> Outcome:
        tag = ops[0].key.partition("}")[0] if ops else ""  # "wl:{project"
        loop = asyncio.get_running_loop()
        joined = self._open.get(tag)
        if joined is None:
            joined = self._open[tag] = []
            loop.call_soon(self._send_tick, tag)
        waiter: asyncio.Future[Outcome] = loop.create_future()
        joined.append((ops, now_ms, waiter))
        return await waiter

    def _send_tick(self, tag: str) -> None:
        # A caller cancelled before the send is left out: it was never counted.
        entries = [e for e in self._open.pop(tag) if not e[2].done()]
        if not entries:
            return
        try:
            batches = [(ops, now_ms) for ops, now_ms, _ in entries]
            reply = None
            if self._submit is not None:
                keys, args = encode(batches, self.prefix)
                reply = self._submit(self.timeout_s, "EVALSHA", SHA, len(keys), *keys, *args)
            if reply is None:  # no connection yet, or redis-py: a task sends it
                self._spawn(entries)
                return
            reply.add_done_callback(lambda r: self._deliver(entries, batches, r))
        except BaseException as exc:  # a loop callback: its callers would wait forever
            _fail(entries, exc)
            if not isinstance(exc, Exception):
                raise

    def _deliver(self, entries: list[_Joined], batches: list[Batch],
                 reply: asyncio.Future[Any]) -> None:
        try:
            raw = reply.result()  # raises: connection lost, no answer in time, cancelled
            if isinstance(raw, Exception):
                if _noscript(raw):  # first call after a Redis restart: the task loads it
                    self._spawn([e for e in entries if not e[2].done()])
                    return
                raise raw
            outcomes = decode(raw, batches)
        except BaseException as exc:  # never leave a caller waiting
            _fail(entries, exc)
            if not isinstance(exc, Exception):
                raise
            return
        _resolve(entries, outcomes)

    def _spawn(self, entries: list[_Joined]) -> None:
        task = asyncio.get_running_loop().create_task(self._send(entries))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send(self, entries: list[_Joined]) -> None:
        try:
            outcomes = await self._call([(ops, now_ms) for ops, now_ms, _ in entries])
        except BaseException as exc:  # every request of the tick gets the failure
            _fail(entries, exc)
            if not isinstance(exc, Exception):
                raise
            return
        _resolve(entries, outcomes)

    async def _call(self, batches: list[Batch]) -> list[Outcome]:
        from redis import exceptions as rexc

        keys, args = encode(batches, self.prefix)
        try:
            async with asyncio.timeout(self.timeout_s):
                try:
                    raw = await self.client.execute("EVALSHA", SHA, len(keys), *keys, *args)
                except Exception as exc:
                    if not _noscript(exc):
                        raise
                    # First call after a Redis restart or failover: load it, once.
                    await self.client.execute("SCRIPT", "LOAD", LUA)
                    raw = await self.client.execute("EVALSHA", SHA, len(keys), *keys, *args)
        except (rexc.RedisError, RespError, OSError, TimeoutError) as exc:
            raise CountersUnavailable(f"redis: {exc!r}") from exc  # see _fail
        return decode(raw, batches)


def _noscript(exc: Exception) -> bool:
    # redis-py raises NoScriptError without the NOSCRIPT prefix; the lean client keeps
    # Redis's message.
    return "NOSCRIPT" in str(exc) or "No matching script" in str(exc)


def _resolve(entries: list[_Joined], outcomes: list[Outcome]) -> None:
    for (*_, waiter), outcome in zip(entries, outcomes, strict=True):
        if not waiter.done():  # a caller cancelled meanwhile
            waiter.set_result(outcome)


def _fail(entries: list[_Joined], exc: BaseException) -> None:
    """Every caller of a tick still waiting gets the failure. Redis unreachable or not
    answering in time, and error replies (READONLY after a failover, LOADING, OOM, BUSY)
    become `CountersUnavailable`, so the configured fail-open/closed choice applies."""
    if isinstance(exc, (TimeoutError, OSError, RespError)):
        exc = CountersUnavailable(f"redis: {exc!r}")
    for *_, waiter in entries:
        if not waiter.done():
            waiter.set_exception(exc)
