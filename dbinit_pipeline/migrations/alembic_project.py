"""Run a package that is an existing Alembic project through its own env.py.

`alembic upgrade head` runs the project's env.py, which configures the migration context (its
`target_metadata` and naming convention, `transaction_per_migration`, `include_schemas`, its
version table) and calls `run_migrations()`. dbinit does the same, with two differences that
Alembic documents for programmatic use: the run's connection is handed over as
`config.attributes["connection"]` (so env.py uses dbinit's server, database, lock and statement
timeout instead of opening its own), and every applied revision is also recorded in dbinit's
ledger, inside the transaction Alembic applies it in (`on_version_apply`).

Invariants:
- Nothing runs unless Alembic's own version table and dbinit's ledger agree on what is pending:
  the steps Alembic would take are compared with the ledger's pending revisions first.
- An env.py that configures any connection other than the handed-over one is refused before it
  runs a migration.
- The package does not join dbinit's single transaction: env.py decides its transactions, as
  under `alembic upgrade`; the response says so.
"""

from __future__ import annotations

import hashlib
import logging
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import sqlalchemy as sa
from alembic.config import Config
from alembic.runtime.environment import EnvironmentContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection

from dbinit_pipeline.errors import ChecksumMismatch, DbinitError, ErrorCode, MigrationError, PackageError
from dbinit_pipeline.migrations import ledger
from dbinit_pipeline.migrations.ledger import LedgerEntry
from dbinit_pipeline.migrations.package import Package
from dbinit_pipeline.migrations.runner import (
    ApplyReport,
    MigrationRunner,
    PackageOutcome,
    check_history,
    pending_of,
)
from dbinit_pipeline.migrations.script_runtime import ALEMBIC_RUNTIME

ENV_FIX = (
    "In env.py, connect only when dbinit has not handed over a connection: `connectable = "
    'config.attributes.get("connection") or engine_from_config(...)`, and pass it to '
    "context.configure(connection=...)."
)


class ForeignConnection(MigrationError):
    """env.py configured a connection other than the one handed over."""


@dataclass
class _Run:
    """What one env.py run configured and applied."""

    configured: bool = False
    options: dict[str, Any] = field(default_factory=dict)
    entries: list[LedgerEntry] = field(default_factory=list)


def is_project(pkg: Package) -> bool:
    return pkg.alembic_ini is not None


def apply_all(
    runner: MigrationRunner, packages: Sequence[Package], *, environment: str = "ENV"
) -> ApplyReport:
    """`runner.apply(packages)`, with every Alembic-project package run through its own env.py,
    in dependency order; a history Alembic built that the ledger does not know is refused."""
    refuse_unadopted(runner, packages, environment=environment)
    if not any(is_project(p) for p in packages):
        return runner.apply(packages)
    reports: list[ApplyReport] = []
    plain: list[Package] = []
    for pkg in packages:
        if not is_project(pkg):
            plain.append(pkg)
            continue
        if plain:
            reports.append(runner.apply(plain))
            plain = []
        reports.append(apply_project(runner, pkg))
    if plain:
        reports.append(runner.apply(plain))
    return _merged(reports)


def _merged(reports: Sequence[ApplyReport]) -> ApplyReport:
    modes = [r.transaction for r in reports if r.transaction != "none"]
    notes = [r.note for r in reports if r.note]
    return ApplyReport(
        packages=tuple(o for r in reports for o in r.packages),
        migrations_applied=sum(r.migrations_applied for r in reports),
        transaction=modes[0] if len(set(modes)) == 1 else ("+".join(modes) if modes else "none"),
        note="; ".join(notes) or None,
        duration_ms=sum(r.duration_ms for r in reports),
        ledger_created=any(r.ledger_created for r in reports),
    )


def refuse_unadopted(runner: MigrationRunner, packages: Sequence[Package], *, environment: str) -> None:
    """Raise `adoption_needed` when a package's version table holds one of its revisions but the
    ledger holds none: the application's own Alembic built it, and applying would run it again.

    Only packages that name their version table (an application's history) or are Alembic
    projects are looked at, so projects of plain dbinit packages pay no query for it."""
    watched = [p for p in packages if p.declared_version_table or is_project(p)]
    if not watched:
        return
    with runner.server.connect(runner.database) as conn:
        tables = set(sa.inspect(conn).get_table_names())
        applied = ledger.read(conn) if ledger.LEDGER_TABLE in tables else {}
        known = {name for name, _ in applied}
        candidates = [p for p in watched if p.name not in known and p.version_table in tables]
        rows = ledger.read_versions(conn, sorted({p.version_table for p in candidates}))
        conn.rollback()
    for pkg in candidates:
        revisions = {m.revision for m in pkg.migrations}
        found = sorted(rows.get(pkg.version_table, set()) & revisions)
        if found:
            raise MigrationError(
                f"Package {pkg.name!r}: {pkg.version_table} in {runner.database!r} says its history "
                f"stands at {', '.join(found)}, but dbinit's ledger has none of its revisions (the "
                "application's own Alembic built it); applying would run that history again. Nothing "
                "was applied",
                code=ErrorCode.ADOPTION_NEEDED,
                suggestions=[
                    f"Adopt the database first: dbinit adopt {environment} --dry-run, then dbinit adopt "
                    f"{environment} (records what is there, changes no table of the application).",
                    f"Then: dbinit init {environment} applies only what is later.",
                ],
                details={"package": pkg.name, "version_table": pkg.version_table, "heads": found},
            )


def project_config(pkg: Package, url: str | None = None, connection: Connection | None = None) -> Config:
    """The project's own `Config` (its alembic.ini), with the run's connection handed over."""
    assert pkg.alembic_ini is not None
    config = Config(str(pkg.alembic_ini))
    if url is not None:
        # What env.py reads when it opens a connection itself (refused, but never elsewhere).
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


@contextmanager
def _project_sys_path(config: Config, pkg: Package) -> Iterator[None]:
    """`prepend_sys_path` as `alembic` applies it when run from the ini's folder."""
    assert pkg.alembic_ini is not None
    entries = [
        str((pkg.alembic_ini.parent / p).resolve()) for p in (config.get_prepend_sys_paths_list() or []) if p
    ]
    added = [e for e in entries if e not in sys.path]
    sys.path[:0] = added
    try:
        yield
    finally:
        for entry in added:
            if entry in sys.path:
                sys.path.remove(entry)


@contextmanager
def _logging_kept() -> Iterator[None]:
    """env.py's `fileConfig(config.config_file_name)` reconfigures logging process-wide (and
    disables every logger it does not name); the run's own logging is put back afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    loggers = {
        name: (lg.disabled, lg.level, list(lg.handlers), lg.propagate)
        for name, lg in logging.Logger.manager.loggerDict.items()
        if isinstance(lg, logging.Logger)
    }
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        for name, (disabled, lvl, hs, propagate) in loggers.items():
            lg = logging.getLogger(name)
            lg.disabled, lg.propagate = disabled, propagate
            lg.setLevel(lvl)
            lg.handlers[:] = hs


def _refusal(pkg: Package, what: str) -> ForeignConnection:
    assert pkg.alembic_ini is not None
    env_py = pkg.alembic_ini.parent
    return ForeignConnection(
        f"Package {pkg.name!r}: the env.py of {pkg.alembic_ini} {what}, instead of the connection dbinit "
        'hands over in config.attributes["connection"]; it would migrate outside dbinit\'s lock and '
        "transaction. Nothing was applied",
        code=ErrorCode.ENV_PY_OWN_CONNECTION,
        suggestions=[ENV_FIX, f"Then rerun; `alembic -c {pkg.alembic_ini} upgrade head` works as before."],
        details={"package": pkg.name, "alembic_ini": str(pkg.alembic_ini), "folder": str(env_py)},
    )


def _check_files(pkg: Package, pending: Sequence[Any]) -> None:
    """The pending files are still the bytes whose checksums the plan (and approval) named."""
    for m in pending:
        if hashlib.sha256(m.path.read_bytes()).hexdigest() != m.checksum:
            raise ChecksumMismatch(
                f"Package {pkg.name!r}: {m.path} changed while this run was applying it (revision "
                f"{m.revision})",
                suggestions=["Rerun once the file is no longer being edited; nothing of it was applied."],
            )


def run_env(
    pkg: Package,
    conn: Connection,
    url: str,
    fn: Callable[[Any, Any], Any],
    *,
    on_configure: Callable[[dict[str, Any]], None],
    on_applied: Callable[..., None],
) -> _Run:
    """Run `pkg`'s env.py on `conn` with Alembic's work function `fn` (as `alembic upgrade` does)."""
    config = project_config(pkg, url, conn)
    run = _Run()
    with ALEMBIC_RUNTIME, _project_sys_path(config, pkg), _logging_kept():
        # Without prepend_sys_path: it was applied above, relative to the ini rather than the cwd.
        config.file_config.remove_option(config.config_ini_section, "prepend_sys_path")
        script = ScriptDirectory.from_config(config)
        env = EnvironmentContext(config, script, fn=fn)
        original = env.configure

        def configure(connection: Any = None, url: Any = None, **options: Any) -> None:
            if connection is not conn:
                what = (
                    "configures a connection of its own"
                    if connection is not None
                    else ("configures no connection (offline mode, or a URL)")
                )
                raise _refusal(pkg, what)
            on_configure(options)
            callbacks = list(options.pop("on_version_apply", None) or ())
            run.configured, run.options = True, dict(options)
            # Alembic iterates on_version_apply (its annotation says one callable).
            hooks: Any = [*callbacks, on_applied]
            original(connection=connection, url=url, on_version_apply=hooks, **options)

        env.configure = configure  # type: ignore[method-assign,assignment]
        with env:
            try:
                script.run_env()
            except DbinitError:
                raise
            except Exception as exc:
                if not run.configured:
                    raise MigrationError(
                        f"Package {pkg.name!r}: the env.py of {pkg.alembic_ini} failed before it configured "
                        f"the migration context: {type(exc).__name__}: {exc}. Nothing was applied",
                        code=ErrorCode.MIGRATION_FAILED,
                        suggestions=[
                            f"Fix {pkg.alembic_ini.parent if pkg.alembic_ini else 'env.py'}/env.py.",
                            "If it opens its own connection: " + ENV_FIX,
                        ],
                    ) from None
                raise
    return run


def apply_project(runner: MigrationRunner, pkg: Package) -> ApplyReport:
    """Apply `pkg`'s pending revisions through its env.py, under the database's session lock."""
    started = time.perf_counter()
    server, provider = runner.server, runner.provider
    url = server.engine(runner.database).url.render_as_string(hide_password=False)
    with server.connect(runner.database) as conn:
        provider.set_statement_timeout(conn, runner.statement_timeout_s)
        with provider.session_lock(conn, runner.database, runner.lock_timeout):
            with conn.begin():
                created = not ledger.exists(conn)
                ledger.ensure(conn)
                applied = ledger.read(conn)
            check_history([pkg], applied)
            pending = pending_of([pkg], applied)
            runner._refuse_unapproved(pending)
            if not pending:
                return ApplyReport(duration_ms=int((time.perf_counter() - started) * 1000))
            _check_files(pkg, pending)
            by_revision = {m.revision: m for m in pkg.migrations}
            wanted = [m.revision for m in pending]
            clock = [time.perf_counter()]

            def upgrade(heads: Any, context: Any) -> Any:
                steps = context.environment_context.script._upgrade_revs(pkg.head, heads)
                planned = [s.revision.revision for s in steps]
                if sorted(planned) != sorted(wanted):
                    raise MigrationError(
                        f"Package {pkg.name!r}: its version table {pkg.version_table} stands at "
                        f"{', '.join(heads) or 'nothing'}, so Alembic would run {', '.join(planned) or 'nothing'}, "
                        f"but dbinit's ledger has {', '.join(wanted)} pending; the two disagree. Nothing was "
                        "applied",
                        code=ErrorCode.VERSION_TABLE_DISAGREES,
                        suggestions=[
                            "If the application's own Alembic built these tables: dbinit adopt ENV.",
                            f"Otherwise compare {pkg.version_table} with dbinit_migrations and repair the "
                            "one that is wrong.",
                        ],
                        details={"version_table": list(heads), "ledger_pending": wanted},
                    )
                clock[0] = time.perf_counter()
                return steps

            def applied_one(*, ctx: Any, step: Any, heads: Any, run_args: Any) -> None:
                now = time.perf_counter()
                entries = [
                    LedgerEntry(
                        package=pkg.name,
                        revision=rev,
                        checksum=by_revision[rev].checksum,
                        filename=by_revision[rev].path.name,
                        run_id=runner.run_id,
                        duration_ms=int((now - clock[0]) * 1000),
                    )
                    for rev in step.up_revision_ids
                    if rev in by_revision
                ]
                ledger.record(ctx.connection, entries)
                run_entries.extend(entries)
                clock[0] = now

            def check_options(options: dict[str, Any]) -> None:
                table = options.get("version_table", "alembic_version")
                if table != pkg.version_table:
                    raise PackageError(
                        f"Package {pkg.name!r}: its env.py configures version_table {table!r}, but dbinit "
                        f"reads {pkg.version_table!r} for it; nothing was applied",
                        code=ErrorCode.PACKAGE_INVALID,
                        suggestions=[
                            f"Put version_table = {table} in the [alembic] section of {pkg.alembic_ini}, "
                            f"or version_table: {table} in {pkg.manifest_path}."
                        ],
                    )

            run_entries: list[LedgerEntry] = []
            try:
                run = run_env(pkg, conn, url, upgrade, on_configure=check_options, on_applied=applied_one)
            except DbinitError:
                if conn.in_transaction():
                    conn.rollback()
                raise
            except Exception as exc:
                if conn.in_transaction():
                    conn.rollback()
                done = {(e.package, e.revision) for e in run_entries}
                failed = next((m for m in pending if m.key not in done), pending[0])
                raise runner._migration_failure(failed, exc) from None
            if conn.in_transaction():
                conn.commit()
    per_migration = bool(run.options.get("transaction_per_migration"))
    transactional = provider.transactional_ddl
    how = "per_migration" if per_migration or not transactional else "own"
    note = (
        f"package {pkg.name} is an Alembic project run through its own env.py ({pkg.alembic_ini}); it "
        "does not join dbinit's single transaction: "
        + (
            "transaction_per_migration committed each of its revisions on its own"
            if per_migration
            else (
                "its revisions ran in one transaction of their own"
                if transactional
                else f"{provider.name} commits each DDL statement"
            )
        )
    )
    return ApplyReport(
        packages=(PackageOutcome(pkg.name, pkg.version, tuple(e.revision for e in run_entries)),),
        migrations_applied=len(run_entries),
        transaction=how,
        note=note,
        duration_ms=int((time.perf_counter() - started) * 1000),
        ledger_created=created,
    )


def with_sql_note(report: ApplyReport, packages: Sequence[Package]) -> ApplyReport:
    """A dry run's report, saying which packages will run through their own env.py."""
    projects = [p.name for p in packages if is_project(p)]
    if not projects:
        return report
    note = (
        f"{', '.join(projects)}: Alembic project(s), run through their own env.py outside dbinit's single "
        "transaction"
    )
    return replace(report, note="; ".join(n for n in (report.note, note) if n))
