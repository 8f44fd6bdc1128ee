"""`watchllm` command line: serve, migrate, projects, keys, plans, demo."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from watchllm.settings import Settings, SettingsError, load_settings


def _print_table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    widths = {c: max([len(c)] + [len(str(r.get(c) or "")) for r in rows]) for c in columns}
    print("  ".join(c.upper().ljust(widths[c]) for c in columns))
    for r in rows:
        print("  ".join(str(r.get(c) or "").ljust(widths[c]) for c in columns))


async def _with_store(settings: Settings, fn: Callable[[Any], Awaitable[None]]) -> None:
    from watchllm.entrypoints.factory import open_database
    from watchllm.metadata.migrate import migrate
    from watchllm.metadata.store import MetadataStore

    db = await open_database(settings)
    try:
        await migrate(db)
        await fn(MetadataStore(db))
    finally:
        await db.close()


def cmd_serve(settings: Settings, args: argparse.Namespace) -> None:
    from watchllm.entrypoints.serve import serve

    serve(settings.replace(host=args.host or settings.host, port=args.port or settings.port,
                           workers=args.workers or settings.workers))


def cmd_migrate(settings: Settings, args: argparse.Namespace) -> None:
    from watchllm.entrypoints.factory import open_database
    from watchllm.metadata.migrate import migrate

    async def run() -> None:
        db = await open_database(settings)
        try:
            applied = await migrate(db)
        finally:
            await db.close()
        print(f"metadata: applied {applied}" if applied else "metadata: up to date")
        if settings.clickhouse_url or settings.mode == "embedded":
            try:
                from watchllm.events.clickhouse_schema import apply_schema
            except ImportError:
                return
            print(await apply_schema(settings))

    asyncio.run(run())


def cmd_rebuild_usage(settings: Settings, args: argparse.Namespace) -> None:
    from watchllm.env.selfhosted.clickhouse import AnalyticsUnavailable
    from watchllm.events.usage_rebuild import rebuild_usage_cli

    try:
        print(asyncio.run(rebuild_usage_cli(settings, args.hours)))
    except AnalyticsUnavailable as exc:
        raise SystemExit(f"watchllm: {exc} (an embedded gateway holds its chDB: stop it "
                         "first)") from None


def cmd_projects(settings: Settings, args: argparse.Namespace) -> None:
    async def run(store: Any) -> None:
        if args.action == "create":
            project = await store.create_project(args.name)
            print(project.id)
        else:
            _print_table([p.public() for p in await store.list_projects()],
                         ["id", "name", "created_at"])

    asyncio.run(_with_store(settings, run))


def cmd_keys(settings: Settings, args: argparse.Namespace) -> None:
    async def run(store: Any) -> None:
        if args.action == "create":
            project = await store.find_project(args.project)
            scopes = tuple(args.scopes.split(",")) if args.scopes else ("proxy", "ingest",
                                                                         "analytics")
            record, plaintext = await store.create_key(project.id, args.name, scopes)
            print(plaintext)
            print(f"(key id {record.id}; shown once, only its hash is stored)", file=sys.stderr)
        elif args.action == "list":
            project_id = (await store.find_project(args.project)).id if args.project else None
            _print_table([k.public() for k in await store.list_keys(project_id)],
                         ["id", "project_id", "name", "prefix", "scopes", "revoked_at"])
        else:
            record = await store.revoke_key(args.key_id)
            print(f"revoked {record.id}")

    asyncio.run(_with_store(settings, run))


def _limits_arg(text: str | None) -> dict[str, Any] | None:
    """--limits: a JSON object, or @file with one (docs/limits.md has the document)."""
    if text is None:
        return None
    import orjson

    from watchllm.errors import InvalidRequestError

    if text.startswith("@"):
        from pathlib import Path

        text = Path(text[1:]).read_text()
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequestError(f"--limits is not valid JSON: {exc}", param="limits") from None
    if not isinstance(value, dict):
        raise InvalidRequestError("--limits must be a JSON object", param="limits")
    return value


def cmd_plans(settings: Settings, args: argparse.Namespace) -> None:
    """The admin API's plan routes (watchllm/routes/admin_plans.py) on the same PlanStore."""
    import orjson

    def show(doc: dict[str, Any]) -> None:
        print(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode())

    async def run(store: Any) -> None:
        from watchllm.metadata.plans import PlanStore

        plans = PlanStore(store.db, settings)
        if args.action == "create":
            show((await plans.create_plan(args.name, _limits_arg(args.limits) or {})).public())
        elif args.action == "list":
            rows = [{**p.public(), "limits": orjson.dumps(p.limits).decode()}
                    for p in await plans.list_plans()]
            _print_table(rows, ["id", "name", "limits"])
        elif args.action == "show":
            show((await plans.get_plan(args.plan)).public())
        elif args.action == "update":
            show((await plans.update_plan(args.plan, args.name,
                                          _limits_arg(args.limits))).public())
        elif args.action == "delete":
            plan = await plans.get_plan(args.plan)
            await plans.delete_plan(plan.id)
            print(f"deleted {plan.id}")
        else:  # assign
            project = await store.find_project(args.project)
            plan_id = None if args.plan == "none" else (await plans.get_plan(args.plan)).id
            await plans.update_project(project.id, {"plan_id": plan_id})
            print(f"project {project.id}: plan {plan_id or 'none'}")

    asyncio.run(_with_store(settings, run))


def cmd_demo(settings: Settings, args: argparse.Namespace) -> None:
    from watchllm.entrypoints.demo import run_demo

    raise SystemExit(run_demo(settings))


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got {text!r}")
    return int(text)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="watchllm", description="WatchLLM LLM gateway")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="run the gateway (granian + uvloop)")
    s.add_argument("--host")
    s.add_argument("--port", type=int)
    s.add_argument("--workers", type=int)
    s.set_defaults(fn=cmd_serve)

    sub.add_parser("migrate", help="apply metadata and ClickHouse migrations").set_defaults(
        fn=cmd_migrate)

    ru = sub.add_parser("rebuild-usage", help="recompute the usage_hourly rollup of the last "
                        "hours from the raw events (gateways stopped; docs/pipeline.md)")
    ru.add_argument("--hours", type=_positive, default=24)
    ru.set_defaults(fn=cmd_rebuild_usage)

    pr = sub.add_parser("projects", help="create or list projects")
    pr_sub = pr.add_subparsers(dest="action", required=True)
    pr_sub.add_parser("create").add_argument("name")
    pr_sub.add_parser("list")
    pr.set_defaults(fn=cmd_projects)

    k = sub.add_parser("keys", help="create, list or revoke project API keys")
    k_sub = k.add_subparsers(dest="action", required=True)
    kc = k_sub.add_parser("create")
    kc.add_argument("--project", required=True, help="project name or id")
    kc.add_argument("--name", default="default")
    kc.add_argument("--scopes", help="comma-separated: proxy,ingest,analytics,admin")
    k_sub.add_parser("list").add_argument("--project")
    k_sub.add_parser("revoke").add_argument("key_id")
    k.set_defaults(fn=cmd_keys)

    pl = sub.add_parser("plans", help="create, list, show, update, delete or assign plans")
    pl_sub = pl.add_subparsers(dest="action", required=True)
    plc = pl_sub.add_parser("create")
    plc.add_argument("name")
    plc.add_argument("--limits", help='JSON object (or @file), e.g. \'{"rpm": 600, '
                     '"budget_usd": 100, "period": "month"}\'')
    pl_sub.add_parser("list")
    pl_sub.add_parser("show").add_argument("plan", help="plan id or name")
    plu = pl_sub.add_parser("update")
    plu.add_argument("plan", help="plan id or name")
    plu.add_argument("--name", help="new name")
    plu.add_argument("--limits", help="JSON object (or @file): replaces the plan's limits")
    pl_sub.add_parser("delete").add_argument("plan", help="plan id or name (must be unused)")
    pla = pl_sub.add_parser("assign", help="put a project on a plan")
    pla.add_argument("plan", help="plan id or name, or 'none' to detach")
    pla.add_argument("--project", required=True, help="project name or id")
    pl.set_defaults(fn=cmd_plans)

    sub.add_parser("demo", help="start the gateway and send a real OpenAI-SDK request through it"
                   ).set_defaults(fn=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    try:
        settings = load_settings()
    except SettingsError as exc:
        raise SystemExit(f"watchllm: invalid setting: {exc}") from None
    try:
        args.fn(settings, args)
    except Exception as exc:  # user-facing errors from the store (bad name, unknown id...)
        from watchllm.errors import WatchLLMError

        if isinstance(exc, WatchLLMError):
            raise SystemExit(f"watchllm: {exc.message}") from None
        raise


if __name__ == "__main__":
    main()
