"""The server's threads run under SCHED_BATCH: set before granian forks, inherited by the
workers' threads (Linux)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(not hasattr(os, "SCHED_BATCH"), reason="Linux only")

CHILD = """
import os, threading
from watchllm.scheduling import batch_scheduling
assert os.sched_getscheduler(0) == os.SCHED_OTHER
assert batch_scheduling()
seen = []
t = threading.Thread(target=lambda: seen.append(os.sched_getscheduler(0)))
t.start(); t.join()
pid = os.fork()
if pid == 0:
    os._exit(0 if os.sched_getscheduler(0) == os.SCHED_BATCH else 1)
_, status = os.waitpid(pid, 0)
print(os.sched_getscheduler(0) == os.SCHED_BATCH, seen == [os.SCHED_BATCH], status == 0)
"""


def test_every_thread_and_forked_worker_inherits_sched_batch() -> None:
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True,
                         check=True).stdout
    assert out.split() == ["True", "True", "True"]


def test_the_setting_defaults_on_and_can_be_turned_off() -> None:
    from watchllm.settings import load_settings

    assert load_settings({}, None).sched_batch is True
    assert load_settings({"WATCHLLM_SCHED_BATCH": "false"}, None).sched_batch is False
    assert load_settings({}, None).analytics_idle is True
    assert load_settings({"WATCHLLM_ANALYTICS_IDLE": "0"}, None).analytics_idle is False
