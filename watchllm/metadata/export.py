"""Write each dialect's metadata migrations (and the ClickHouse schema) under `deploy/`.

    python -m watchllm.metadata.export deploy          # what `make migrations` runs
    python -m watchllm.metadata.export deploy --check  # exit 1 if a committed file is stale

Files: `deploy/postgres/NNNN_name.sql`, `deploy/sqlite/NNNN_name.sql`,
`deploy/cloudflare/migrations/NNNN_name.sql` (the layout `wrangler d1 migrations apply`
reads) and `deploy/clickhouse/schema.sql`. All are generated from
`watchllm/metadata/schema.py` and `watchllm/events/schema.py`, so they cannot drift.
"""

from __future__ import annotations

import sys
from pathlib import Path

from watchllm.events import clickhouse_schema
from watchllm.metadata.schema import MIGRATIONS, migration_file

DIALECT_DIRS = {"postgres": "postgres", "sqlite": "sqlite", "d1": "cloudflare/migrations"}


def rendered(root: Path) -> dict[Path, str]:
    """Every generated file under `root` and its expected text."""
    files = {
        root / sub / f"{m.version:04d}_{m.name}.sql": migration_file(m, dialect)
        for dialect, sub in DIALECT_DIRS.items()
        for m in MIGRATIONS
    }
    files[root / "clickhouse" / "schema.sql"] = clickhouse_schema.render()
    return files


def stale(root: Path) -> list[Path]:
    """Generated files that are missing or differ from what the sources render."""
    return [p for p, text in rendered(root).items() if not p.is_file() or p.read_text() != text]


def write(root: Path) -> list[Path]:
    changed = stale(root)
    for path, text in rendered(root).items():
        if path in changed:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    return changed


def main(argv: list[str]) -> int:
    args = [a for a in argv if not a.startswith("--")]
    root = Path(args[0] if args else "deploy")
    if "--check" in argv:
        bad = stale(root)
        for p in bad:
            print(f"stale: {p} (run `make migrations`)", file=sys.stderr)
        return 1 if bad else 0
    for p in write(root):
        print(f"wrote {p}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
