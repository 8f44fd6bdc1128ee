"""SCHED_BATCH for the server's threads (Linux).

A granian worker is two kinds of thread on the same core(s): granian's Rust I/O thread and
the Python thread running the app. Each request wakes one for the other several times,
and under the default policy every wake-up preempts the running thread at once: a
context switch, then another to come back. Under SCHED_BATCH a woken thread waits until
the running one blocks or its time slice ends, so the handing back and forth happens in
batches. Measured on the project machine (`bench/load/ab.py`, interleaved, same run): a
cache hit 65 -> 50 µs CPU, a passthrough 161 -> 151 µs; latency under fixed load in
docs/performance.md.

Unprivileged: any process may lower itself to SCHED_BATCH (nice values still apply). The
policy is inherited across fork and by new threads, so setting it on the serving process
before granian starts its workers covers every thread they start.

SCHED_IDLE for event shipping (`background_priority`, `WATCHLLM_ANALYTICS_IDLE`): the
pipeline's encoder, the ClickHouse insert and query threads and, with chDB, the engine's
inserts and merges are background work on the gateway's own cores. Under SCHED_IDLE any
other thread that wakes preempts them at once (under SCHED_BATCH a request woken while a
20 ms insert runs waits for the insert's time slice); they still get ~0.3% of a
saturated core, and all of any idle one. Threads inherit the policy, so the engine's own
pools started from these threads (merges, schedule pools) get it too.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger("watchllm")


def batch_scheduling() -> bool:
    """Put every thread of this process under SCHED_BATCH; False where unsupported."""
    policy = getattr(os, "SCHED_BATCH", None)
    if policy is None or not hasattr(os, "sched_setscheduler"):
        return False
    try:
        tids = [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:
        tids = [0]  # 0 is the calling thread
    try:
        for tid in tids:
            os.sched_setscheduler(tid, policy, os.sched_param(0))
    except OSError as exc:
        log.warning("SCHED_BATCH not available (%s); keeping the default policy", exc)
        return False
    return True


def background_priority() -> bool:
    """Put the calling thread (and the threads it starts) under SCHED_IDLE."""
    policy = getattr(os, "SCHED_IDLE", None)
    if policy is None or not hasattr(os, "sched_setscheduler"):
        return False
    try:
        os.sched_setscheduler(0, policy, os.sched_param(0))  # 0: the calling thread
    except OSError as exc:
        log.warning("SCHED_IDLE not available (%s); analytics threads keep their policy", exc)
        return False
    return True
