"""Minimal RSGI apps timed side by side: the floors under the gateway's own costs
(bench/load/stream_floor.py, bench/load/header_cost.py).

A script names its modes and its app factory; `run` either serves one mode (`SCRIPT
--serve PORT MODE`, granian on this process, the mode passed to the worker's import of the
script through an environment variable), or starts one server per mode pinned to core 0,
drives each in turn with `hey -c 50` on core 1 for `--rounds` interleaved rounds of
`--seconds`, and prints requests/s and server CPU per request, medians per mode.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path


def _serve(module: str, env_name: str, port: int, mode: str) -> None:
    from granian import Granian
    from granian.constants import Interfaces, Loops, RuntimeModes

    os.environ[env_name] = mode  # read by the worker's import of the script
    Granian(f"{module}:app", address="127.0.0.1", port=port, interface=Interfaces.RSGI,
            loop=Loops.uvloop, runtime_mode=RuntimeModes.st, log_access=False,
            log_level="warning").serve()  # type: ignore[arg-type]


def _compare(script: str, modes: dict[str, str], seconds: int, rounds: int) -> None:
    from run import hey, measured

    from watchllm.testing.servers import free_port, start

    tmp = Path(tempfile.mkdtemp(prefix="watchllm-minimal-"))
    body = tmp / "body.json"
    body.write_text("{}")
    servers = {}
    try:
        for mode in modes:
            port = free_port()
            servers[mode] = start([script, "--serve", str(port), mode], {}, port,
                                  tmp / f"{mode}.log", "/", cpu=0)
        runs: dict[str, list[dict[str, float]]] = {mode: [] for mode in modes}
        for _ in range(rounds):
            for mode, server in servers.items():
                runs[mode].append(measured(server, lambda s=server: hey(
                    s.url + "/", seconds, body, {})))
    finally:
        for server in servers.values():
            server.stop()
    print(f"\n`{' '.join(sys.argv)}`: medians of {rounds} rounds of {seconds} s\n")
    print("| response | requests/s | server CPU µs/request |")
    print("| --- | ---: | ---: |")
    for mode, rows in runs.items():
        rps = statistics.median(r["rps"] for r in rows)
        cpu = statistics.median(r["cpu_ms_per_req"] for r in rows) * 1000
        print(f"| {modes[mode]} | {rps:,.0f} | {cpu:.1f} |")


def run(script: str, env_name: str, modes: dict[str, str], seconds: int, rounds: int) -> None:
    """The script's `__main__`: serve one mode, or compare them all (see above)."""
    if len(sys.argv) == 4 and sys.argv[1] == "--serve":
        _serve(Path(script).stem, env_name, int(sys.argv[2]), sys.argv[3])
        return
    p = argparse.ArgumentParser()
    p.add_argument("--seconds", type=int, default=seconds)
    p.add_argument("--rounds", type=int, default=rounds)
    args = p.parse_args()
    _compare(script, modes, args.seconds, args.rounds)
