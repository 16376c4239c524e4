"""The `dbinit` command: the pipeline from the shell.

`init` runs the environment's Dagster job in this process and prints the response (one JSON
object) on stdout; progress goes to stderr. `plan` is `init --dry-run`. `status`, `health`,
`graph` and `new-migration` read and scaffold without running the job.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from dbinit_pipeline.configuration import IF_EXISTS, LoadedConfig, load_config
from dbinit_pipeline.errors import PackageError
from dbinit_pipeline.fastpath.heap import collect_less
from dbinit_pipeline.redaction import redact

if TYPE_CHECKING:
    from dbinit_pipeline.api import Adoption


def _api() -> ModuleType:
    """The public API, imported on first use: `dbinit --help` and `new-migration` never load the
    database layers, and `main` lowers the collector's work before they are imported."""
    from dbinit_pipeline import api

    return api


def _emit(payload: dict[str, Any]) -> None:
    sys.stdout.write(redact(json.dumps(payload, indent=2, default=str)) + "\n")
    sys.stdout.flush()


def _fail(
    error: BaseException, *, stage: str, environment: str | None = None, operation: str | None = None
) -> int:
    """Print the error document of `error` (see `_api().failure`); the exit code of a failure."""
    response = _api().failure(error, stage=stage, environment=environment, operation=operation).response
    _emit(response or {})
    return 1


def _config(args: argparse.Namespace) -> LoadedConfig:
    return load_config(Path(args.config).resolve() if args.config else None)


# -- init / plan -----------------------------------------------------------------------


def _call(
    args: argparse.Namespace,
    call: Callable[[LoadedConfig], dict[str, Any]],
    *,
    stage: str,
    operation: str | None = None,
) -> dict[str, Any]:
    """The document to print for an API call on the configuration of `args`: what it returned,
    or the error document of whatever it raised."""
    try:
        return call(_config(args))
    except Exception as exc:  # a bug too: still a document
        found = _api().failure(exc, stage=stage, environment=args.environment, operation=operation).response
        return found or {}


def _print(response: dict[str, Any]) -> int:
    _emit(response)
    return 0 if response.get("status") == "success" else 1


def cmd_init(args: argparse.Namespace) -> int:
    response = _call(
        args,
        lambda config: _api().initialize(
            args.environment,
            config=config,
            database_name=args.database_name,
            if_exists=args.if_exists,
            dry_run=args.dry_run or args.command == "plan",
            sql=args.sql,
            verbose=args.verbose,
        ),
        stage="validate",
    )
    if getattr(args, "sql", False) and response.get("status") == "success":
        plan = response["result"].get("plan", {})
        if plan.get("hash"):
            sys.stdout.write(f"-- plan {plan['hash']}\n")
        sys.stdout.write(f"-- {plan.get('sql_rendering', '')}\n")
        for package, sql in plan.get("sql", {}).items():
            sys.stdout.write(f"-- package {package}\n{sql}\n")
        return 0
    return _print(response)


# -- approvals -------------------------------------------------------------------------
def _adoption(args: argparse.Namespace) -> Adoption:
    """The adoption named by --package/--at/--accept-drift (with --adopt, or for `dbinit adopt`)."""
    from dbinit_pipeline.api import Adoption

    return Adoption(package=args.package, at=args.at, accept_drift=bool(args.accept_drift))


def cmd_request(args: argparse.Namespace) -> int:
    response = _call(
        args,
        lambda config: _api().request(
            args.environment,
            by=args.by,
            reason=args.reason,
            config=config,
            database_name=args.database_name,
            if_exists=args.if_exists,
            adoption=_adoption(args) if args.adopt else None,
            fallback=sys.stderr,
        ),
        stage="request",
        operation="request-approval",
    )
    for error in response.get("result", {}).get("notification_errors", []):
        sys.stderr.write(f"dbinit: notification not delivered: {error}\n")
    return _print(response)


def cmd_approve(args: argparse.Namespace) -> int:
    response = _call(
        args,
        lambda config: _api().approve(
            args.environment,
            by=args.by,
            reason=args.reason,
            ttl=args.ttl,
            plan_hash=args.plan_hash,
            config=config,
            database_name=args.database_name,
            if_exists=args.if_exists,
            adoption=_adoption(args) if args.adopt else None,
        ),
        stage="approve",
        operation="approve",
    )
    return _print(response)


# -- status / health -------------------------------------------------------------------
def cmd_status(args: argparse.Namespace) -> int:
    response = _call(
        args,
        lambda config: _api().status(args.environment, config=config, database_name=args.database_name),
        stage="status",
        operation="status",
    )
    return _print(response)


def cmd_health(args: argparse.Namespace) -> int:
    response = _call(
        args,
        lambda config: _api().health(args.environment, config=config, database_name=args.database_name),
        stage="health",
        operation="health",
    )
    _emit(response)
    return {"healthy": 0, "degraded": 2}.get(str(response.get("status")), 1)


def cmd_resolve(args: argparse.Namespace) -> int:
    response = _call(
        args,
        lambda config: _api().resolve(
            args.environment,
            args.package,
            args.revision,
            applied=args.applied,
            config=config,
            database_name=args.database_name,
        ),
        stage="resolve",
        operation="resolve",
    )
    return _print(response)


def cmd_adopt(args: argparse.Namespace) -> int:
    response = _call(
        args,
        lambda config: _api().adopt(
            args.environment,
            config=config,
            database_name=args.database_name,
            adoption=_adoption(args),
            dry_run=args.dry_run,
        ),
        stage="adopt",
        operation="adopt",
    )
    return _print(response)


# -- packages --------------------------------------------------------------------------
def cmd_graph(args: argparse.Namespace) -> int:
    from dbinit_pipeline.migrations.loading import registry_for

    try:
        registry = registry_for(_config(args))
    except Exception as exc:
        return _fail(exc, stage="validate", operation="graph")
    sys.stdout.write(registry.dot() if args.dot else registry.mermaid())
    return 0


MIGRATION_TEMPLATE = '''"""{message}

Revision ID: {revision}
Revises: {down}
Package: {package}
"""

import sqlalchemy as sa
from alembic import op

revision = "{revision}"
down_revision = {down_literal}


def upgrade():
    pass


def downgrade():
    pass
'''


def new_migration(config: LoadedConfig, package: str, message: str) -> Path:
    """Write the next revision script of `package` and return its path."""
    from dbinit_pipeline.migrations.loading import registry_for

    registry = registry_for(config)
    pkg = registry.by_name.get(package)
    if pkg is None or package == "core":
        known = ", ".join(p.name for p in registry.packages()) or "none"
        raise PackageError(
            f"No package named {package!r} under packages.paths (known: {known})",
            suggestions=["Create the package folder with a package.yaml first."],
        )
    folder = pkg.migrations_dir or pkg.path / "migrations"
    folder.mkdir(exist_ok=True)
    number = len(pkg.migrations) + 1
    slug = re.sub(r"[^a-z0-9]+", "_", message.lower()).strip("_")[:40] or "change"
    revision = uuid.uuid4().hex[:12]
    path = folder / f"{number:04d}_{slug}.py"
    path.write_text(
        MIGRATION_TEMPLATE.format(
            message=message.replace('"""', "'''"),
            revision=revision,
            down=pkg.head or "",
            down_literal=repr(pkg.head),
            package=package,
        )
    )
    return path


def cmd_new_migration(args: argparse.Namespace) -> int:
    try:
        path = new_migration(_config(args), args.package, args.message)
    except Exception as exc:
        return _fail(exc, stage="validate", operation="new-migration")
    _emit({"status": "success", "operation": "new-migration", "result": {"file": str(path)}})
    return 0


# -- entry point -----------------------------------------------------------------------
def adoption_flags(p: argparse.ArgumentParser) -> None:
    """`--adopt` (and its selection) on request/approve: the plan is the adoption's."""
    p.add_argument("--adopt", action="store_true", help="the plan of `dbinit adopt ENV`, not of init")
    p.add_argument("--package", help="with --adopt: the package of --at")
    p.add_argument("--at", help="with --adopt: the revision the package stands at")
    p.add_argument("--accept-drift", action="store_true", help="with --adopt: as dbinit adopt --accept-drift")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dbinit", description="Initialize databases per environment.")
    parser.add_argument("--config", help="path to dbinit.yaml (default: $DBINIT_CONFIG, $DBINIT_CWD, ./)")
    sub = parser.add_subparsers(dest="command", required=True)

    def with_env(p: argparse.ArgumentParser) -> None:
        p.add_argument("environment", help="an environment configured in dbinit.yaml")
        p.add_argument("--database-name", help="target database (default: configured or <project>_<env>)")

    for name, helptext in (
        ("init", "initialize the environment's database"),
        ("plan", "dry run: show what init would do"),
    ):
        p = sub.add_parser(name, help=helptext)
        with_env(p)
        p.add_argument("--if-exists", choices=IF_EXISTS)
        p.add_argument("--dry-run", action="store_true", help="change nothing; list what would be applied")
        p.add_argument(
            "--sql",
            action="store_true",
            help="dry run that prints the SQL, rendered by running the scripts in Alembic's offline mode",
        )
        p.add_argument("--verbose", action="store_true", help="log Dagster's debug events too")
        p.set_defaults(func=cmd_init)
    p = sub.add_parser("request", help="ask the environment's approvers to approve the current plan")
    with_env(p)
    p.add_argument(
        "--if-exists",
        choices=IF_EXISTS,
        help="the run's policy, if not the configured one",
    )
    p.add_argument("--by", required=True, help="your name")
    p.add_argument("--reason", help="why the run is needed")
    adoption_flags(p)
    p.set_defaults(func=cmd_request)
    p = sub.add_parser("approve", help="approve the current plan for one run (approvers only)")
    with_env(p)
    p.add_argument(
        "--if-exists",
        choices=IF_EXISTS,
        help="the run's policy, if not the configured one",
    )
    p.add_argument("--by", required=True, help="your name, as listed in safety.approvers.<env>")
    p.add_argument("--reason", help="why it is approved")
    p.add_argument("--ttl", help="how long the approval stays valid (default safety.approval_ttl, e.g. 2h)")
    p.add_argument(
        "--plan-hash", help="the hash you reviewed (dbinit plan); refused if the plan changed since"
    )
    adoption_flags(p)
    p.set_defaults(func=cmd_approve)
    p = sub.add_parser("adopt", help="record where a database built by an application's own Alembic stands")
    with_env(p)
    p.add_argument("--package", help="adopt only this package (with --at)")
    p.add_argument("--at", help="the revision the package stands at, when its version table does not say")
    p.add_argument(
        "--dry-run", action="store_true", help="verify and show what would be recorded; change nothing"
    )
    p.add_argument("--accept-drift", action="store_true", help="record even where the live schema differs")
    p.set_defaults(func=cmd_adopt)
    p = sub.add_parser("status", help="applied, adopted and pending revisions per package")
    with_env(p)
    p.set_defaults(func=cmd_status)
    p = sub.add_parser("health", help="health report; exit 0 healthy, 2 degraded, 1 unhealthy")
    with_env(p)
    p.set_defaults(func=cmd_health)
    p = sub.add_parser(
        "resolve", help="clear the mark of a migration whose process died midway (MySQL/MariaDB)"
    )
    with_env(p)
    p.add_argument("package")
    p.add_argument("revision")
    outcome = p.add_mutually_exclusive_group(required=True)
    outcome.add_argument("--undone", action="store_true", help="its effects were undone: run it again")
    outcome.add_argument("--applied", action="store_true", help="it took full effect: record it as applied")
    p.set_defaults(func=cmd_resolve)
    p = sub.add_parser("graph", help="the package dependency graph (Mermaid, or DOT with --dot)")
    p.add_argument("--dot", action="store_true")
    p.set_defaults(func=cmd_graph)
    p = sub.add_parser("new-migration", help="scaffold the next revision of a package")
    p.add_argument("package")
    p.add_argument("-m", "--message", required=True)
    p.set_defaults(func=cmd_new_migration)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    collect_less()  # before the imports of Dagster, SQLAlchemy and Alembic (see heap.py)
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
