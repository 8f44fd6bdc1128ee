"""Run the gateway under granian (Rust HTTP server) with uvloop."""

from __future__ import annotations

import logging
import os
import shutil

from watchllm.scheduling import batch_scheduling
from watchllm.settings import Settings

log = logging.getLogger("watchllm")


def serve(settings: Settings) -> None:
    from granian import Granian
    from granian.constants import Interfaces, Loops, RuntimeModes

    workers = settings.workers
    if settings.mode == "embedded" and workers > 1:
        # In-process cache, limits and the chDB data directory belong to one process.
        log.warning("embedded mode runs one worker; use WATCHLLM_MODE=self_hosted to scale out")
        workers = 1
    # Workers share Prometheus metrics through files in this directory. It must be exported
    # before anything imports watchllm.metrics: granian forks, and the workers would inherit
    # single-process metrics.
    prom_dir = settings.data_dir / "prometheus"
    shutil.rmtree(prom_dir, ignore_errors=True)  # old pids' files
    prom_dir.mkdir(parents=True, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(prom_dir.resolve())
    # Workers re-read settings from the environment: pass on what the CLI changed.
    os.environ["WATCHLLM_HOST"], os.environ["WATCHLLM_PORT"] = settings.host, str(settings.port)
    if settings.sched_batch:
        batch_scheduling()  # before granian forks: the workers and their threads inherit it
    rsgi = settings.interface == "rsgi"
    Granian(
        "watchllm.entrypoints.rsgi:app" if rsgi else "watchllm.entrypoints.asgi:app",
        address=settings.host,
        port=settings.port,
        interface=Interfaces.RSGI if rsgi else Interfaces.ASGI,
        loop=Loops.uvloop,
        runtime_mode=RuntimeModes.st,
        workers=workers,
        log_access=False,
        log_level=settings.log_level,  # type: ignore[arg-type]
        backlog=2048,
    ).serve()
