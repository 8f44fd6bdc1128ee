"""What a project and a key may do: parsed from a plan's limits JSON, validated once.

    {"rpm": 600, "tpm": 200000, "max_concurrent": 20,       per project (all its keys)
     "key": {"rpm": 60, "tpm": 40000, "max_concurrent": 5},  per key, unless the key sets its own
     "budget_usd": 100, "max_requests": 1000000, "max_tokens": 50000000,
     "period": "month"}                                     month | week | day | <n>d | <n>h

Absent or null means unlimited. Per-key values resolve: the key's own limits (set through
the admin API), else the plan's "key" section, else WATCHLLM_DEFAULT_RPM / _TPM /
_MAX_CONCURRENT, else unlimited. Rates are per minute, enforced with GCRA (docs/limits.md).
"""

from __future__ import annotations

import calendar
import re
import time
from dataclasses import dataclass, field
from typing import Any

from watchllm.errors import InvalidRequestError
from watchllm.limits.ops import MAX_CAPACITY

RATE_WINDOW_MS = 60_000
_PERIOD_RE = re.compile(r"^(month|week|day|(\d{1,4})([dh]))$")
_SCOPE_FIELDS = ("rpm", "tpm", "max_concurrent")
_PLAN_FIELDS = (*_SCOPE_FIELDS, "key", "budget_usd", "max_requests", "max_tokens", "period")


@dataclass(frozen=True, slots=True)
class Scope:
    rpm: int | None = None
    tpm: int | None = None
    max_concurrent: int | None = None

    def over(self, fallback: Scope) -> Scope:
        """These values, each missing one taken from `fallback`."""
        return Scope(
            self.rpm if self.rpm is not None else fallback.rpm,
            self.tpm if self.tpm is not None else fallback.tpm,
            self.max_concurrent if self.max_concurrent is not None else fallback.max_concurrent,
        )


UNLIMITED = Scope()


@dataclass(frozen=True, slots=True)
class Limits:
    project: Scope = UNLIMITED
    key: Scope = UNLIMITED
    budget_usd: float | None = None
    max_requests: int | None = None
    max_tokens: int | None = None
    period: str = "month"
    # Worked out once: read on every request.
    unlimited: bool = field(init=False, compare=False, repr=False, default=True)
    # Set by LimitsService on the Limits object it caches for one caller, once that caller's
    # rates-only requests can be admitted in one call: `admit_at_once(tokens)` gives the
    # RateGrant, or None (then `LimitsService.admit` answers; it raises the 429), and
    # `settle_at_once(grant, real_tokens)` settles it (real_tokens at most 2^53). No Python
    # frame per request.
    admit_at_once: Any = field(init=False, compare=False, repr=False, default=None)
    settle_at_once: Any = field(init=False, compare=False, repr=False, default=None)

    def __post_init__(self) -> None:
        object.__setattr__(self, "unlimited", (
            self.project == UNLIMITED and self.key == UNLIMITED and self.budget_usd is None
            and self.max_requests is None and self.max_tokens is None))


def _int(data: dict[str, Any], name: str, where: str) -> int | None:
    value = data.get(name)
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidRequestError(f"{where}{name} must be a non-negative integer or null",
                                  param=f"{where}{name}")
    if name in ("rpm", "tpm") and value == 0:  # a rate has no meaning at 0 (GCRA divides by it)
        raise InvalidRequestError(
            f"{where}{name} must be a positive integer or null (null: unlimited; to stop a "
            "key, revoke it or set its max_concurrent to 0)", param=f"{where}{name}")
    if name in ("rpm", "tpm") and value * RATE_WINDOW_MS > MAX_CAPACITY:
        raise InvalidRequestError(f"{where}{name} is too large (max {MAX_CAPACITY // 60_000})",
                                  param=f"{where}{name}")
    return value


def parse_scope(data: Any, where: str = "") -> Scope:
    if data is None:
        return UNLIMITED
    if not isinstance(data, dict):
        raise InvalidRequestError(f"{where or 'limits'} must be an object", param=where or "limits")
    unknown = sorted(set(data) - set(_SCOPE_FIELDS))
    if unknown:
        raise InvalidRequestError(f"unknown limit fields {unknown}; known: {list(_SCOPE_FIELDS)}",
                                  param=where or "limits")
    return Scope(*(_int(data, f, where) for f in _SCOPE_FIELDS))


def parse_limits(data: Any) -> Limits:
    """A plan's limits document -> Limits; 400 naming the field when it is invalid."""
    if data is None:
        return Limits()
    if not isinstance(data, dict):
        raise InvalidRequestError("limits must be an object", param="limits")
    unknown = sorted(set(data) - set(_PLAN_FIELDS))
    if unknown:
        raise InvalidRequestError(f"unknown plan fields {unknown}; known: {list(_PLAN_FIELDS)}",
                                  param="limits")
    budget = data.get("budget_usd")
    if budget is not None and (isinstance(budget, bool) or not isinstance(budget, int | float)
                               or budget < 0):
        raise InvalidRequestError("budget_usd must be a non-negative number or null",
                                  param="budget_usd")
    period = data.get("period") or "month"
    if not isinstance(period, str) or not _PERIOD_RE.match(period) or period in ("0d", "0h"):
        raise InvalidRequestError("period must be month, week, day, <n>d or <n>h", param="period")
    return Limits(
        project=parse_scope({k: data[k] for k in _SCOPE_FIELDS if k in data}),
        key=parse_scope(data.get("key"), "key."),
        budget_usd=None if budget is None else float(budget),
        max_requests=_int(data, "max_requests", ""),
        max_tokens=_int(data, "max_tokens", ""),
        period=period,
    )


def period_bounds(period: str, now_s: float) -> tuple[str, int]:
    """(period id, end in epoch ms) of the period containing `now_s`; UTC calendar.

    `<n>d` / `<n>h` periods are fixed lengths counted from the Unix epoch.
    """
    t = time.gmtime(now_s)
    if period == "month":
        year, month = (t.tm_year + 1, 1) if t.tm_mon == 12 else (t.tm_year, t.tm_mon + 1)
        return f"{t.tm_year:04d}-{t.tm_mon:02d}", calendar.timegm((year, month, 1, 0, 0, 0)) * 1000
    day_start = calendar.timegm((t.tm_year, t.tm_mon, t.tm_mday, 0, 0, 0))
    if period == "day":
        return time.strftime("%Y-%m-%d", t), (day_start + 86_400) * 1000
    if period == "week":  # ISO weeks start on Monday
        start = day_start - t.tm_wday * 86_400
        iso = time.strftime("%G-W%V", t)
        return iso, (start + 7 * 86_400) * 1000
    m = _PERIOD_RE.match(period)
    if not m or not m.group(2):
        raise ValueError(f"unknown period {period!r}")
    length = int(m.group(2)) * (86_400 if m.group(3) == "d" else 3_600) * 1000
    index = int(now_s * 1000) // length
    return f"{period}.{index}", (index + 1) * length
