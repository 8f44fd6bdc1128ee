"""Rate limits, budgets and quotas (docs/limits.md).

`LimitsService` is what the hot path calls; `RedisLimiter` is the Redis `Counters.apply`;
`ops` holds the batch semantics both runtimes share.
"""

from watchllm.limits.plan import Limits, Scope, parse_limits, parse_scope, period_bounds
from watchllm.limits.reset import duration
from watchllm.limits.responses import QuotaExceededError
from watchllm.limits.service import Admission, LimitsService

__all__ = [
    "Admission",
    "Limits",
    "LimitsService",
    "QuotaExceededError",
    "Scope",
    "duration",
    "parse_limits",
    "parse_scope",
    "period_bounds",
]
