"""The one source of the metadata schema; every dialect's DDL is rendered from it.

Portable column types: TEXT, INTEGER (64-bit), REAL, BOOL. Timestamps are INTEGER
milliseconds since the Unix epoch, JSON documents are TEXT, so the same SQL (with `?`
placeholders) runs on SQLite, D1 and PostgreSQL.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    type: str  # TEXT | INTEGER | REAL | BOOL
    nullable: bool = False
    primary: bool = False
    default: str | None = None  # an SQL literal valid in every dialect


@dataclass(frozen=True, slots=True)
class Table:
    name: str
    columns: tuple[Column, ...]


@dataclass(frozen=True, slots=True)
class Index:
    name: str
    table: str
    columns: tuple[str, ...]
    unique: bool = False


@dataclass(frozen=True, slots=True)
class AddColumn:
    table: str
    column: Column


Op = Table | Index | AddColumn


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    ops: tuple[Op, ...]


def _c(name: str, type_: str, **kw: object) -> Column:
    return Column(name, type_, **kw)  # type: ignore[arg-type]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "projects_and_keys",
        (
            Table(
                "projects",
                (
                    _c("id", "TEXT", primary=True),
                    _c("name", "TEXT"),
                    _c("settings", "TEXT", default="'{}'"),
                    _c("plan_id", "TEXT", nullable=True),
                    _c("created_at", "INTEGER"),
                ),
            ),
            Index("projects_name", "projects", ("name",), unique=True),
            Table(
                "api_keys",
                (
                    _c("id", "TEXT", primary=True),
                    _c("project_id", "TEXT"),
                    _c("name", "TEXT"),
                    _c("prefix", "TEXT"),
                    _c("key_hash", "TEXT"),
                    _c("scopes", "TEXT"),
                    _c("allowed_models", "TEXT", nullable=True),
                    _c("created_at", "INTEGER"),
                    _c("expires_at", "INTEGER", nullable=True),
                    _c("revoked_at", "INTEGER", nullable=True),
                ),
            ),
            Index("api_keys_project", "api_keys", ("project_id",)),
        ),
    ),
    Migration(
        2,
        "plans_and_provider_keys",
        (
            # limits: the plan document of watchllm/limits/plan.py (rates, budget, quotas).
            Table(
                "plans",
                (
                    _c("id", "TEXT", primary=True),
                    _c("name", "TEXT"),
                    _c("limits", "TEXT", default="'{}'"),
                    _c("created_at", "INTEGER"),
                    _c("updated_at", "INTEGER"),
                ),
            ),
            Index("plans_name", "plans", ("name",), unique=True),
            # Per-key overrides of the plan's key limits ({"rpm", "tpm", "max_concurrent"}).
            AddColumn("api_keys", _c("limits", "TEXT", nullable=True)),
            # Provider API keys per project, AES-256-GCM: base64(nonce || ciphertext+tag),
            # bound to (id, project_id, provider) as associated data; key_id names the
            # master key that sealed it (rotation re-seals under the current one).
            Table(
                "provider_keys",
                (
                    _c("id", "TEXT", primary=True),
                    _c("project_id", "TEXT"),
                    _c("provider", "TEXT"),
                    _c("ciphertext", "TEXT"),
                    _c("key_id", "TEXT"),
                    _c("hint", "TEXT"),
                    _c("created_at", "INTEGER"),
                    _c("updated_at", "INTEGER"),
                ),
            ),
            Index("provider_keys_project", "provider_keys", ("project_id", "provider"),
                  unique=True),
        ),
    ),
)

LATEST_VERSION = MIGRATIONS[-1].version

_TYPES = {
    "sqlite": {"TEXT": "TEXT", "INTEGER": "INTEGER", "REAL": "REAL", "BOOL": "INTEGER"},
    "postgres": {
        "TEXT": "TEXT", "INTEGER": "BIGINT", "REAL": "DOUBLE PRECISION", "BOOL": "BOOLEAN"
    },
}
_TYPES["d1"] = _TYPES["sqlite"]


def _column_sql(col: Column, dialect: str) -> str:
    parts = [col.name, _TYPES[dialect][col.type]]
    if col.primary:
        parts.append("PRIMARY KEY")
    elif not col.nullable:
        parts.append("NOT NULL")
    if col.default is not None:
        parts.append(f"DEFAULT {col.default}")
    return " ".join(parts)


def render(op: Op, dialect: str) -> str:
    if isinstance(op, Table):
        cols = ",\n    ".join(_column_sql(c, dialect) for c in op.columns)
        return f"CREATE TABLE IF NOT EXISTS {op.name} (\n    {cols}\n)"
    if isinstance(op, Index):
        unique = "UNIQUE " if op.unique else ""
        return (
            f"CREATE {unique}INDEX IF NOT EXISTS {op.name} ON {op.table} ({', '.join(op.columns)})"
        )
    return f"ALTER TABLE {op.table} ADD COLUMN {_column_sql(op.column, dialect)}"


def migration_sql(migration: Migration, dialect: str) -> list[str]:
    return [render(op, dialect) for op in migration.ops]


VERSIONS_TABLE = (
    "CREATE TABLE IF NOT EXISTS schema_migrations "
    "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)"
)
_NOW_MS = {"postgres": "(EXTRACT(EPOCH FROM now()) * 1000)::BIGINT",
           "sqlite": "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)"}
_NOW_MS["d1"] = _NOW_MS["sqlite"]


def migration_file(migration: Migration, dialect: str) -> str:
    """The text of a migration file (D1's `wrangler d1 migrations` format).

    It records itself in `schema_migrations`, so a database migrated by these files (e.g.
    by wrangler) and one migrated by `watchllm migrate` agree on the version.
    """
    head = f"-- Migration {migration.version:04d} {migration.name} ({dialect}).\n"
    head += "-- Generated from watchllm/metadata/schema.py: edit that, then `make migrations`.\n"
    record = (f"INSERT INTO schema_migrations (version, name, applied_at) VALUES "
              f"({migration.version}, '{migration.name}', {_NOW_MS[dialect]}) "
              "ON CONFLICT (version) DO NOTHING")
    statements = [*migration_sql(migration, dialect), VERSIONS_TABLE, record]
    return head + "".join(f"{s};\n" for s in statements)
