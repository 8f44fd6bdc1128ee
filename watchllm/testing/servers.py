"""Start the gateway or the mock upstream as real subprocesses (granian), wait until healthy."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self, timeout: float = 20) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError as exc:
            if getattr(exc, "code", None):  # any HTTP answer means it is up
                return
            time.sleep(0.05)
    raise RuntimeError(f"server not ready after {timeout}s:\n{log.read_text()[-3000:]}")


def start(args: list[str], env: Mapping[str, str], port: int, log: Path,
          health: str = "/health", cpu: int | None = None) -> Server:
    cmd = [sys.executable, *args]
    if cpu is not None:
        cmd = ["taskset", "-c", str(cpu), *cmd]
    fh = log.open("wb")
    proc = subprocess.Popen(cmd, env={**os.environ, **env}, stdout=fh, stderr=subprocess.STDOUT)
    wait_ready(f"http://127.0.0.1:{port}{health}", proc, log)
    return Server(proc, port, log)


def start_mock_upstream(log_dir: Path, fixed: bool = False, cpu: int | None = None,
                        provider_headers: bool = False) -> Server:
    port = free_port()
    args = ["-m", "watchllm.testing.mock_upstream", "--port", str(port)]
    args += ["--fixed"] if fixed else []
    args += ["--provider-headers"] if provider_headers else []
    return start(args, {}, port, log_dir / f"mock-{port}.log", "/_mock/stats", cpu)


def start_gateway(data_dir: Path, env: Mapping[str, str], cpu: int | None = None,
                  workers: int = 1) -> Server:
    port = free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    full = {"WATCHLLM_DATA_DIR": str(data_dir), "WATCHLLM_PORT": str(port),
            "WATCHLLM_WORKERS": str(workers), **env}
    return start(["-m", "watchllm.entrypoints.cli", "serve"], full, port,
                 data_dir / f"gateway-{port}.log", "/health", cpu)


def ensure_database(name: str, dsn: str = "postgresql://postgres@127.0.0.1:5432") -> None:
    """Create a PostgreSQL database for a bench if it does not exist (fresh machines)."""
    import asyncio

    import asyncpg

    async def create() -> None:
        conn = await asyncpg.connect(f"{dsn}/postgres")
        try:
            if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
                await conn.execute(f"CREATE DATABASE {name}")
        finally:
            await conn.close()

    asyncio.run(create())
