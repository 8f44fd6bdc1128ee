"""Assemble the Worker's Python bundle in deploy/cloudflare/build/ (what wrangler uploads).

    python deploy/cloudflare/build.py [--out DIR]

Copies src/entry.py and the pure-Python `watchllm` package (no `_core` extension: Pyodide
cannot load native code, so `watchllm.core` uses the twins), minus what never runs on
Workers (servers, self-hosted adapters, test helpers). When no real orjson is vendored,
the stdlib-json stand-in `compat/orjson.py` is added. Prints the bundle size.
"""

from __future__ import annotations

import shutil
import sys
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
# Never imported on the Cloudflare path (each needs sockets, threads, sqlite3 or a server).
EXCLUDE = (
    "watchllm/testing",
    "watchllm/entrypoints",
    "watchllm/env/selfhosted",
    "watchllm/env/http_lean.py",
    "watchllm/env/http_aiohttp.py",
    "watchllm/env/embedded/sqlite.py",
    "watchllm/events/pipeline.py",
    "watchllm/events/spool.py",
)


def _skip(rel: str) -> bool:
    if "__pycache__" in rel or rel.endswith((".so", ".pyd", ".pyc")):
        return True
    return any(rel == e or rel.startswith(e + "/") for e in EXCLUDE)


def build(out: Path) -> int:
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    shutil.copy2(HERE / "src" / "entry.py", out / "entry.py")
    for path in sorted((ROOT / "watchllm").rglob("*")):
        rel = path.relative_to(ROOT).as_posix()
        if path.is_file() and not _skip(rel):
            dest = out / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, dest)
    if not (out / "orjson").exists():
        shutil.copy2(HERE / "compat" / "orjson.py", out / "orjson.py")
    return sum(p.stat().st_size for p in out.rglob("*") if p.is_file())


def zipped_size(out: Path) -> int:
    tmp = out.with_suffix(".zip")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        for p in sorted(out.rglob("*")):
            if p.is_file():
                z.write(p, p.relative_to(out).as_posix())
    size = tmp.stat().st_size
    tmp.unlink()
    return size


if __name__ == "__main__":
    target = Path(sys.argv[sys.argv.index("--out") + 1]) if "--out" in sys.argv else HERE / "build"
    total = build(target)
    files = sum(1 for p in target.rglob("*") if p.is_file())
    print(f"bundle {target}: {files} files, {total / 1024:.0f} KiB "
          f"({zipped_size(target) / 1024:.0f} KiB compressed)")
