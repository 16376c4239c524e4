"""Apply package migrations through Alembic's operations, in dependency order, with a ledger.

The registry already knows the order (it validated the graph), so the runner walks the
ordered packages and runs each pending revision script's `upgrade()` with Alembic's `op`
bound to one connection: one transaction for the whole set on PostgreSQL, unless the set
would not fit the server's lock table. Only pending scripts are imported: when the ledger
and the files' checksums say nothing is pending, no script is loaded at all.
"""

from __future__ import annotations

import hashlib
import io
import re
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, replace
from types import CodeType, ModuleType
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Connection, event
from sqlalchemy.exc import DBAPIError

from dbinit_pipeline.database.providers.plain_ddl import keeping_foreign_handlers
from dbinit_pipeline.database.server import DatabaseServer
from dbinit_pipeline.errors import (
    ApprovalError,
    ChecksumMismatch,
    DbinitError,
    ErrorCode,
    MigrationError,
    classify,
    describe,
)
from dbinit_pipeline.fastpath.code_cache import cached_code, keep_code, save_compiled
from dbinit_pipeline.fastpath.write_behind import WriteBehind
from dbinit_pipeline.migrations import ledger
from dbinit_pipeline.migrations.core_placement import offline_enter, offline_leave, searching
from dbinit_pipeline.migrations.ledger import LedgerEntry
from dbinit_pipeline.migrations.package import Migration, Package
from dbinit_pipeline.migrations.script_runtime import (
    ALEMBIC_RUNTIME,
    ScriptEnvironment,
    on_autocommit,
    own_transaction,
    script_environment,
    script_line,
)
from dbinit_pipeline.redaction import redact

Progress = Callable[[str, int, int], None]
# Lock-table entries one migration (a table with its indexes and foreign keys) holds until commit
# on PostgreSQL; the single transaction is split where the server's lock table cannot hold them all.
LOCKS_PER_MIGRATION = 14


@dataclass(frozen=True)
class PackageOutcome:
    """What one package got (or, in a dry run, would get)."""

    name: str
    version: str
    revisions: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "revisions": list(self.revisions)}


@dataclass(frozen=True)
class ApplyReport:
    """The outcome of applying a set of packages."""

    packages: tuple[PackageOutcome, ...] = ()
    migrations_applied: int = 0
    pending: int = 0
    transaction: str = "none"
    note: str | None = None
    dry_run: bool = False
    sql: dict[str, str] = field(default_factory=dict)
    duration_ms: int = 0
    ledger_created: bool = False


@dataclass(frozen=True)
class PackageStatus:
    name: str
    version: str
    applied: tuple[str, ...]
    pending: tuple[str, ...]


def _code_of(migration: Migration) -> CodeType:
    """The compiled script, exactly the content whose sha256 the ledger records.

    The file is read once, its hash checked against the checksum taken when the package was
    read (a file edited since is refused, not run), and compiled; with a code cache, the code
    object is kept under that checksum, like a .pyc but keyed by content and out of the package
    folder (with 2,000 scripts, compiling was a tenth of the apply's Python time).
    """
    filename = str(migration.path)
    found, key = cached_code(migration.code_cache, migration.checksum, filename)
    if found is not None:
        return found
    source = migration.path.read_bytes()
    if hashlib.sha256(source).hexdigest() != migration.checksum:
        raise ChecksumMismatch(
            f"Package {migration.package!r}: {migration.path} changed while this run was applying it "
            f"(revision {migration.revision})",
            details={
                "package": migration.package,
                "revision": migration.revision,
                "file": str(migration.path),
            },
            suggestions=["Rerun once the file is no longer being edited; nothing of this stage was kept."],
        )
    code = compile(source, filename, "exec", dont_inherit=True)
    keep_code(migration.code_cache, key, code)
    return code


def _load_script(migration: Migration) -> ModuleType:
    name = f"_dbinit_revision_{migration.package}_{migration.revision}"
    module = ModuleType(name)
    module.__file__ = str(migration.path)
    module.__package__ = ""
    try:
        sys.modules[name] = module
        exec(_code_of(migration), module.__dict__)
    except DbinitError:
        raise
    except Exception as exc:
        line = exc.lineno if isinstance(exc, SyntaxError) else script_line(exc, migration.path)
        at = f", line {line}" if line else ""
        raise MigrationError(
            f"Package {migration.package!r}: {migration.path}{at} cannot be imported: "
            f"{type(exc).__name__}: {exc}",
            code=ErrorCode.MIGRATION_FAILED,
            suggestions=[f"Fix {migration.path}; nothing was applied."],
            details={
                "package": migration.package,
                "revision": migration.revision,
                "file": str(migration.path),
                "line": line,
                "exception": type(exc).__name__,
            },
        ) from None
    finally:
        sys.modules.pop(name, None)
    if not callable(getattr(module, "upgrade", None)):
        raise MigrationError(f"Package {migration.package!r}: {migration.path} has no upgrade() function")
    return module


def check_history(packages: Sequence[Package], applied: dict[tuple[str, str], LedgerEntry]) -> None:
    """Raise before anything runs if an applied file changed, vanished, or history has a gap."""
    by_package: dict[str, list[tuple[str, LedgerEntry]]] = {}
    for (name, revision), entry in applied.items():
        by_package.setdefault(name, []).append((revision, entry))
    for pkg in packages:
        on_disk = {m.revision: m for m in pkg.migrations}
        for revision, entry in by_package.get(pkg.name, ()):
            if revision not in on_disk:
                raise ChecksumMismatch(
                    f"Package {pkg.name!r}: revision {revision!r} ({entry.filename}) was applied "
                    f"but is no longer in {pkg.migrations_dir or pkg.path / 'migrations'}",
                    code=ErrorCode.APPLIED_MIGRATION_MISSING,
                    suggestions=[f"Restore {entry.filename}; applied migrations must not be deleted."],
                )
        seen_pending: Migration | None = None
        for m in pkg.migrations:
            found = applied.get(m.key)
            if found is None:
                seen_pending = seen_pending or m
                continue
            entry = found
            if entry.checksum != m.checksum:
                raise ChecksumMismatch(
                    f"Package {pkg.name!r}: {m.path} changed after it was applied "
                    f"(revision {m.revision}, applied {entry.applied_at} by run {entry.run_id})",
                    details={"package": pkg.name, "revision": m.revision, "file": str(m.path)},
                    suggestions=[
                        f"Restore the applied content of {m.path.name} (git checkout it).",
                        "Put the change in a new revision: dbinit new-migration "
                        f"{pkg.name} -m 'describe the change'.",
                    ],
                )
            if seen_pending is not None:
                raise MigrationError(
                    f"Package {pkg.name!r}: {m.path.name} is applied but the earlier revision "
                    f"{seen_pending.path.name} is not; the history has a gap",
                    code=ErrorCode.HISTORY_GAP,
                    suggestions=[
                        "Never insert a revision before an applied one; append a new revision instead."
                    ],
                )


# Statements after which MySQL has committed implicitly (its DDL), whatever the transaction says.
_IMPLICIT_COMMIT = re.compile(r"^\s*(create|alter|drop|rename|truncate)\b", re.IGNORECASE)


@contextmanager
def _statements_of(conn: Connection) -> Iterator[list[str]]:
    """The statements `conn` completes inside the block, in order."""
    executed: list[str] = []

    def note(*args: Any) -> None:
        executed.append(str(args[2]))

    event.listen(conn, "after_cursor_execute", note)
    try:
        yield executed
    finally:
        event.remove(conn, "after_cursor_execute", note)


def _name_committed_statements(error: MigrationError, m: Migration, executed: Sequence[str]) -> None:
    """Where DDL is not transactional, say what the failed migration left behind: its statements up
    to its last DDL stayed committed, and a rerun of the fixed file would trip over them."""
    last_ddl = max((i for i, s in enumerate(executed) if _IMPLICIT_COMMIT.match(s)), default=-1)
    committed = [redact(" ".join(s.split()))[:300] for s in executed[: last_ddl + 1]]
    error.details["committed_statements"] = committed
    if not committed:
        error.suggestions.insert(
            1,
            f"This attempt committed none of {m.path.name}'s statements (an object that already "
            "exists was left by an earlier failed attempt: see that run's committed_statements).",
        )
        return
    shown = "; ".join(committed[:5]) + ("; ..." if len(committed) > 5 else "")
    error.suggestions.insert(
        0,
        f"{m.path.name} is half applied: the server had committed {len(committed)} statement(s) of it "
        f"before the failure ({shown}). Undo them by hand (for example DROP TABLE for a table it "
        "created) or make them skip what exists, then fix the failing statement and rerun; the "
        f"rerun starts again at revision {m.revision}.",
    )


# Codes that say more than "the migration failed": what to do differs.
_KEPT_CODES = (ErrorCode.LOCK_TABLE_FULL, ErrorCode.STATEMENT_TIMEOUT, ErrorCode.CANCELLED)


def _offline_statements(dialect: str, m: Migration) -> list[str]:
    """The SQL `m` emits in Alembic's offline mode, one statement an item."""
    buffer = io.StringIO()
    with script_environment(dialect_name=dialect, output=buffer) as env:
        env.enter(m)
        _load_script(m).upgrade()
    return [" ".join(s.split()) for s in buffer.getvalue().split(";") if s.strip()]


def pending_of(packages: Sequence[Package], applied: dict[tuple[str, str], LedgerEntry]) -> list[Migration]:
    return [m for pkg in packages for m in pkg.migrations if m.key not in applied]


def _by_package(pending: Sequence[Migration]) -> dict[str, list[Migration]]:
    grouped: dict[str, list[Migration]] = {}
    for m in pending:
        grouped.setdefault(m.package, []).append(m)
    return grouped


@contextmanager
def _transaction(conn: Connection) -> Iterator[None]:
    """A transaction committed at the end, whichever it then is: a script's autocommit_block()
    commits the one begun here and begins another (Alembic's MigrationContext owns it)."""
    conn.begin()
    try:
        yield
    except BaseException:
        if conn.in_transaction():
            conn.rollback()
        raise
    if conn.in_transaction():
        conn.commit()


def _with_server_time(behind: WriteBehind, entry: LedgerEntry) -> LedgerEntry:
    """The entry's duration with its deferred statements' server time added."""
    return replace(entry, duration_ms=entry.duration_ms + behind.server_ms((entry.package, entry.revision)))


def package_statuses(
    packages: Sequence[Package], applied: dict[tuple[str, str], LedgerEntry]
) -> list[PackageStatus]:
    """Applied and pending revisions per package, from what the ledger holds."""
    return [
        PackageStatus(
            pkg.name,
            pkg.version,
            tuple(m.revision for m in pkg.migrations if m.key in applied),
            tuple(m.revision for m in pkg.migrations if m.key not in applied),
        )
        for pkg in packages
    ]


class MigrationRunner:
    """Applies packages to one database of one server."""

    def __init__(
        self,
        server: DatabaseServer,
        database: str,
        *,
        run_id: str = "manual",
        lock_timeout: float = 60.0,
        transaction_mode: str = "auto",
        progress: Progress | None = None,
        allowed: frozenset[tuple[str, str, str]] | None = None,
        statement_timeout_s: float | None = None,
    ) -> None:
        self.server = server
        self.provider = server.provider
        self.database = database
        self.run_id = run_id
        self.lock_timeout = lock_timeout
        self.transaction_mode = transaction_mode
        self.progress = progress
        # (package, revision, sha256) an approval covers; None when the run needs no approval.
        self.allowed = allowed
        self.statement_timeout_s = statement_timeout_s
        # Where a script's autocommit_block() split the atomic unit, in order.
        self.splits: list[str] = []
        self._current: Migration | None = None
        # Packages whose scripts run in a PostgreSQL schema of their own (core_placement).
        self._schemas: dict[str, str] = {}

    def _refuse_unapproved(self, pending: Sequence[Migration]) -> None:
        """Apply nothing that the run's approval does not cover (checked under the lock)."""
        if self.allowed is None:
            return
        outside = [m for m in pending if (m.package, m.revision, m.checksum) not in self.allowed]
        if outside:
            names = ", ".join(f"{m.package}:{m.revision} ({m.path.name})" for m in outside[:10])
            raise ApprovalError(
                f"Pending revision(s) outside the approved plan of {self.database!r}: {names}; "
                "nothing was applied",
                code=ErrorCode.PLAN_CHANGED,
                suggestions=[
                    "Review the current plan (dbinit plan ENV) and have it approved, then launch a new run.",
                ],
                details={"unapproved": [f"{m.package}:{m.revision}" for m in outside]},
            )

    # -- reading -----------------------------------------------------------------------
    def applied(self, conn: Connection) -> dict[tuple[str, str], LedgerEntry]:
        return ledger.read(conn) if ledger.exists(conn) else {}

    # -- dry run -----------------------------------------------------------------------
    def plan_pending(self, packages: Sequence[Package], *, database_exists: bool) -> ApplyReport:
        """What would be applied, from the ledger and the files' checksums: no script is imported."""
        applied: dict[tuple[str, str], LedgerEntry] = {}
        if database_exists:
            with self.server.connect(self.database) as conn:
                applied = self.applied(conn)
                conn.rollback()
        check_history(packages, applied)
        pending = pending_of(packages, applied)
        grouped = _by_package(pending)
        outcomes = [
            PackageOutcome(pkg.name, pkg.version, tuple(m.revision for m in grouped[pkg.name]))
            for pkg in packages
            if grouped.get(pkg.name)
        ]
        return ApplyReport(
            packages=tuple(outcomes),
            pending=len(pending),
            dry_run=True,
            transaction=self._decide_mode(len(pending), None)[0] if pending else "none",
        )

    def plan_sql(self, packages: Sequence[Package], *, database_exists: bool) -> ApplyReport:
        """The SQL each pending revision would run (Alembic offline mode); changes nothing."""
        try:
            return self._plan_sql(packages, database_exists=database_exists)
        finally:
            save_compiled()

    def _plan_sql(self, packages: Sequence[Package], *, database_exists: bool) -> ApplyReport:
        self._schemas = {p.name: p.schema for p in packages if p.schema}
        applied: dict[tuple[str, str], LedgerEntry] = {}
        if database_exists:
            with self.server.connect(self.database) as conn:
                applied = self.applied(conn)
        check_history(packages, applied)
        pending = pending_of(packages, applied)
        grouped = _by_package(pending)
        sql: dict[str, str] = {}
        outcomes: list[PackageOutcome] = []
        for pkg in packages:
            mine = grouped.get(pkg.name, [])
            if not mine:
                continue
            buffer = io.StringIO()
            if pkg.schema:
                buffer.write(offline_enter(pkg.schema))
            with script_environment(dialect_name=self.provider.name, output=buffer) as env:
                for m in mine:
                    buffer.write(f"-- {pkg.name} {m.revision} ({m.path.name})\n")
                    env.enter(m)
                    module = _load_script(m)
                    try:
                        with keeping_foreign_handlers(m.imports_foreign):
                            module.upgrade()
                    except DbinitError:
                        raise
                    except (Exception, SystemExit) as exc:
                        raise self._migration_failure(m, exc) from None
            if pkg.schema:
                buffer.write(offline_leave())
            sql[pkg.name] = buffer.getvalue()
            outcomes.append(PackageOutcome(pkg.name, pkg.version, tuple(m.revision for m in mine)))
        return ApplyReport(
            packages=tuple(outcomes),
            pending=len(pending),
            dry_run=True,
            sql=sql,
            transaction=self._decide_mode(len(pending), None)[0] if pending else "none",
        )

    # -- applying ----------------------------------------------------------------------
    def _decide_mode(self, pending: int, conn: Connection | None) -> tuple[str, str | None]:
        if not self.provider.transactional_ddl:
            return "per_migration", (
                f"{self.provider.name} commits every DDL statement: progress is recorded per migration "
                "and a rerun resumes after the last one applied"
            )
        if self.transaction_mode == "single":
            return "single", None
        if self.transaction_mode == "per_package":
            return "per_package", "packages.transaction is per_package in dbinit.yaml"
        if conn is None:
            return "single", None
        capacity = self.provider.lock_capacity(conn)
        needed = pending * LOCKS_PER_MIGRATION
        if capacity.slots is not None and needed > capacity.slots * 0.8:
            return "per_package", (
                f"{pending} pending migrations need about {needed} locks in one transaction; the "
                f"server's lock table holds {capacity.slots} (max_locks_per_transaction="
                f"{capacity.per_transaction}), so each package was committed on its own. Raise "
                "max_locks_per_transaction to apply everything atomically."
            )
        return "single", None

    def apply(self, packages: Sequence[Package]) -> ApplyReport:
        """Apply every pending revision of `packages`, dependencies first."""
        try:
            return self._apply(packages)
        finally:
            save_compiled()

    def _apply(self, packages: Sequence[Package]) -> ApplyReport:
        started = time.perf_counter()
        self._schemas = {p.name: p.schema for p in packages if p.schema}
        with self.server.connect(self.database) as conn:
            self.provider.set_statement_timeout(conn, self.statement_timeout_s)
            tables = set(sa.inspect(conn).get_table_names())  # one catalog query for both questions
            created = ledger.LEDGER_TABLE not in tables
            applied = {} if created else ledger.read(conn)
            check_history(packages, applied)
            pending = pending_of(packages, applied)
            self._refuse_unapproved(pending)
            if not pending:
                conn.rollback()
                # heads still in the shared table: give each package its own now
                if ledger.VERSION_TABLE in tables:
                    with _transaction(conn):
                        self._sync_versions(conn, packages, applied)
                return ApplyReport(duration_ms=int((time.perf_counter() - started) * 1000))
            mode, note = self._decide_mode(len(pending), conn)
            conn.rollback()
            if mode == "single":
                outcomes = self._apply_batch(conn, packages)
            elif mode == "per_package":
                outcomes = self._apply_per_package(conn, packages, pending)
                if ledger.VERSION_TABLE in tables:  # the others' heads, as when nothing is pending
                    waiting = {m.package for m in pending}
                    with _transaction(conn):
                        self._sync_versions(conn, [p for p in packages if p.name not in waiting], applied)
            else:
                with self.provider.session_lock(conn, self.database, self.lock_timeout):
                    outcomes = self._apply_each(conn, packages)
        applied_count = sum(len(o.revisions) for o in outcomes)
        if self.splits:
            note = "; ".join([*([note] if note else []), *self.splits])
        return ApplyReport(
            packages=tuple(outcomes),
            migrations_applied=applied_count,
            transaction=mode,
            note=note,
            duration_ms=int((time.perf_counter() - started) * 1000),
            ledger_created=created,
        )

    def _apply_per_package(
        self, conn: Connection, packages: Sequence[Package], pending: Sequence[Migration]
    ) -> list[PackageOutcome]:
        """One transaction per package that has something pending; progress counts over all."""
        report, waiting = self.progress, {m.package for m in pending}
        outcomes: list[PackageOutcome] = []
        try:
            for pkg in packages:
                if pkg.name not in waiting:
                    continue
                if report is not None:
                    base = sum(len(o.revisions) for o in outcomes)
                    self.progress = lambda name, done, _t, base=base: report(name, base + done, len(pending))
                outcomes.extend(self._apply_batch(conn, [pkg]))
        finally:
            self.progress = report
        return outcomes

    def _apply_batch(self, conn: Connection, packages: Sequence[Package]) -> list[PackageOutcome]:
        """One transaction: lock, re-read the ledger under the lock, run, record, commit.

        A script's `autocommit_block()` splits the transaction: what is done so far is recorded
        and committed, the block runs outside a transaction, and the rest continues in a new one
        (under the lock again); `self.splits` says where and why.

        The process's migration context lock is taken before the database lock: after a split
        the database lock is taken again inside the context, so taking them in the other order
        could leave two threads of one process each waiting for the other's."""
        with ALEMBIC_RUNTIME, _transaction(conn):
            self.provider.lock_in_transaction(conn, self.database, self.lock_timeout)
            ledger.ensure(conn)
            applied = ledger.read(conn)
            check_history(packages, applied)
            pending = pending_of(packages, applied)
            self._refuse_unapproved(pending)
            total = len(pending)
            entries: list[LedgerEntry] = []
            recorded = 0
            outcomes: list[PackageOutcome] = []
            grouped = _by_package(pending)
            done = 0
            with (
                script_environment(connection=conn) as env,
                WriteBehind.over(conn, env.context, self._migration_failure) as behind,
            ):
                own_transaction(env.context, conn)

                def before_split() -> None:
                    nonlocal recorded
                    if behind is not None:
                        behind.drain()
                        behind.suspended = True
                    finished = entries[recorded:]
                    if behind is not None:
                        finished = [_with_server_time(behind, e) for e in finished]
                    ledger.record(conn, finished)
                    self._set_heads(conn, packages, finished)
                    recorded = len(entries)
                    self._note_split()

                def after_split() -> None:
                    if behind is not None:
                        behind.suspended = False
                    self.provider.lock_in_transaction(conn, self.database, self.lock_timeout)

                on_autocommit(env.context, before_split, after_split)
                for pkg in packages:
                    mine = grouped.get(pkg.name, [])
                    if not mine:
                        continue
                    for m in mine:
                        self._current = m
                        entries.append(self._run_one(m, behind, env))
                        done += 1
                        if self.progress:
                            self.progress(pkg.name, done, total)
                    outcomes.append(PackageOutcome(pkg.name, pkg.version, tuple(m.revision for m in mine)))
                if behind is not None:
                    behind.drain()
                    entries = [_with_server_time(behind, e) for e in entries]
            ledger.record(conn, entries[recorded:])
            self._set_heads(conn, packages, entries[recorded:])
            self._sync_versions(conn, packages, applied)
        return outcomes

    def _sync_versions(
        self, conn: Connection, packages: Sequence[Package], applied: dict[tuple[str, str], LedgerEntry]
    ) -> None:
        """Write the version table of packages applied before it existed (their heads sat in
        the shared legacy `alembic_version`)."""
        existing = set(sa.inspect(conn).get_table_names())
        for pkg in packages:
            # A package in a schema of its own never had its head in the shared legacy table.
            if pkg.version_table in existing or pkg.schema:
                continue
            done = [m.revision for m in pkg.migrations if m.key in applied]
            if done:
                ledger.set_version(conn, pkg.version_table, done[-1], [m.revision for m in pkg.migrations])

    def _set_heads(
        self, conn: Connection, packages: Sequence[Package], entries: Sequence[LedgerEntry]
    ) -> None:
        """Point the version rows of the packages in `entries` at their last applied revision."""
        touched = {e.package for e in entries}
        if not touched:
            return
        applied = {(e.package, e.revision) for e in entries}
        tables = set(sa.inspect(conn).get_table_names())  # once, not twice per package
        for pkg in packages:
            if pkg.name not in touched:
                continue
            last = [m.revision for m in pkg.migrations if m.key in applied][-1]
            previous = [m.revision for m in pkg.migrations]
            ledger.set_version(conn, pkg.version_table, last, previous, tables=tables)

    def _note_split(self) -> None:
        m = self._current
        if m is None:
            return
        self.splits.append(
            f"{m.package}:{m.revision} ({m.path.name}) runs an autocommit_block(): everything before "
            "it was committed (and recorded), the block ran outside a transaction, and the rest "
            "continued in a new transaction"
        )

    def _apply_each(self, conn: Connection, packages: Sequence[Package]) -> list[PackageOutcome]:
        """Where DDL commits by itself: record each migration as soon as it is applied, so a
        failure leaves a ledger that says exactly where to resume."""
        with conn.begin():
            ledger.ensure(conn)
            ledger.ensure_in_progress(conn)
            applied = ledger.read(conn)
            unfinished = ledger.read_in_progress(conn)
        check_history(packages, applied)
        if unfinished:
            raise self._dirty_error(packages, unfinished)
        pending = pending_of(packages, applied)
        self._refuse_unapproved(pending)
        total = len(pending)
        outcomes: list[PackageOutcome] = []
        done = 0
        for pkg in packages:
            mine = [m for m in pending if m.package == pkg.name]
            for m in mine:
                # Committed before the migration's first statement: a crash from here until the
                # ledger row is written leaves the mark, and the next run stops on it.
                with conn.begin():
                    ledger.mark_in_progress(conn, m.package, m.revision, m.checksum, self.run_id)
                with _transaction(conn):
                    with script_environment(connection=conn) as env, _statements_of(conn) as executed:
                        own_transaction(env.context, conn)
                        self._current = m
                        on_autocommit(env.context, self._note_split, lambda: None)
                        try:
                            entry = self._run_one(m, None, env)
                        except DbinitError as exc:
                            if isinstance(exc, MigrationError):
                                _name_committed_statements(exc, m, executed)
                            elif executed:
                                raise  # statements ran and may have committed: the mark stays
                            # The error names what was committed, or nothing ran (the file
                            # changed since it was read): the mark has served its purpose.
                            conn.rollback()
                            with conn.begin():
                                ledger.clear_in_progress(conn, m.package, m.revision)
                            raise
                    # The version table first: its CREATE (once) commits implicitly on MySQL.
                    previous = [r.revision for r in pkg.migrations]
                    ledger.set_version(conn, pkg.version_table, m.revision, previous)
                    ledger.record(conn, [entry])
                    ledger.clear_in_progress(conn, m.package, m.revision)
                done += 1
                if self.progress:
                    self.progress(pkg.name, done, total)
            if mine:
                outcomes.append(PackageOutcome(pkg.name, pkg.version, tuple(m.revision for m in mine)))
        with conn.begin():
            self._sync_versions(conn, packages, ledger.read(conn))
        return outcomes

    def _run_one(
        self, m: Migration, behind: WriteBehind | None = None, env: ScriptEnvironment | None = None
    ) -> LedgerEntry:
        if behind is not None:
            behind.start(m)
        if env is not None:
            env.enter(m)
        module = _load_script(m)
        t0 = time.perf_counter()
        schema = self._schemas.get(m.package)
        try:
            placed_on = env.context.connection if env is not None else None
            with keeping_foreign_handlers(m.imports_foreign):
                if schema is not None and placed_on is not None:
                    with searching(placed_on, schema):
                        module.upgrade()
                else:
                    module.upgrade()
        except DbinitError:
            raise
        except (Exception, SystemExit) as exc:  # a script's sys.exit() is the script's failure
            raise self._migration_failure(m, exc) from None
        finally:
            if behind is not None:
                behind.finish(m)
        return LedgerEntry(
            package=m.package,
            revision=m.revision,
            checksum=m.checksum,
            filename=m.path.name,
            run_id=self.run_id,
            duration_ms=int((time.perf_counter() - t0) * 1000),
        )

    def resolve(self, packages: Sequence[Package], package: str, revision: str, *, applied: bool) -> str:
        """Clear the in-progress mark of a migration whose process died: as undone (it runs again
        next time) or as applied (recorded in the ledger, not run again). Returns what was done."""
        by_key = {m.key: m for pkg in packages for m in pkg.migrations}
        with self.server.connect(self.database) as conn, conn.begin():
            marks = {(r.package, r.revision): r for r in ledger.read_in_progress(conn)}
            mark = marks.get((package, revision))
            if mark is None:
                known = ", ".join(f"{p}:{r}" for p, r in marks) or "none"
                raise MigrationError(
                    f"{package}:{revision} is not marked as started-and-unfinished in {self.database!r} "
                    f"(marked: {known}); nothing was changed",
                    code=ErrorCode.NOT_DIRTY,
                    suggestions=["Run dbinit init ENV: it names the unfinished migration, if any."],
                )
            if applied:
                m = by_key.get((package, revision))
                if m is None or m.checksum != mark.checksum:
                    raise ChecksumMismatch(
                        f"{package}:{revision} cannot be recorded as applied: its file "
                        + ("is gone" if m is None else f"({m.path}) changed since the run that started it")
                        + "; nothing was changed",
                        suggestions=["Restore the file as it was, or resolve with --undone and rerun."],
                    )
                ledger.record(
                    conn,
                    [
                        LedgerEntry(
                            package, revision, m.checksum, m.path.name, run_id=f"resolve:{self.run_id}"
                        )
                    ],
                )
                owner = next(p for p in packages if p.name == package)
                ledger.set_version(
                    conn, owner.version_table, revision, [r.revision for r in owner.migrations]
                )
            ledger.clear_in_progress(conn, package, revision)
        return "applied" if applied else "undone"

    def _dirty_error(
        self, packages: Sequence[Package], unfinished: Sequence[ledger.InProgress]
    ) -> MigrationError:
        """A migration started and never finished (the process died): name it and what it runs."""
        first = unfinished[0]
        by_key = {m.key: m for pkg in packages for m in pkg.migrations}
        m = by_key.get((first.package, first.revision))
        where = f"{m.path}" if m else f"revision {first.revision} (no longer on disk)"
        statements: list[str] = []
        if m is not None and m.checksum == first.checksum:
            with suppress(Exception):  # the statements are help for the reader, not a requirement
                statements = _offline_statements(self.provider.name, m)
        resolve = f"dbinit resolve ENV {first.package} {first.revision}"
        return MigrationError(
            f"Package {first.package!r}, revision {first.revision} ({where}) was started by run "
            f"{first.run_id} at {first.started_at} and never finished: its process ended before it "
            f"could record the outcome, and {self.provider.name} committed each of its DDL statements "
            "as it ran, so some of them may be in the database",
            code=ErrorCode.MIGRATION_DIRTY,
            suggestions=[
                "Inspect the database for the effects of the statements listed in details.statements "
                "(the migration's SQL, in order).",
                f"If none of them took effect, or after undoing those that did: {resolve} --undone "
                "(the next run applies the migration again).",
                f"If all of them took effect: {resolve} --applied (recorded as applied, not run again).",
            ],
            details={
                "package": first.package,
                "revision": first.revision,
                "file": str(m.path) if m else None,
                "started_by_run": first.run_id,
                "statements": statements,
            },
        )

    def _migration_failure(self, m: Migration, exc: BaseException) -> DbinitError:
        classified = classify(exc, during=f"applying {m.path.name}")
        statement = (
            redact(" ".join(str(exc.statement).split()))[:500] if isinstance(exc, DBAPIError) else None
        )
        line = script_line(exc, m.path)
        at = f", line {line}" if line else ""
        if classified.code == ErrorCode.INTERNAL_ERROR:
            # Not dbinit's fault: the script raised it.
            cause = f"{type(exc).__name__}: {describe(exc)}"
        else:
            cause = classified.message
        message = f"Package {m.package!r}, revision {m.revision} ({m.path}{at}) failed: {cause}"
        if statement:
            message += f" | failing statement: {statement}"
        suggestions = [
            f"Fix {m.path} and rerun; "
            + (
                "the whole transaction was rolled back, so nothing of this stage was applied."
                if self.provider.transactional_ddl
                else "the migrations before it stay applied and the rerun resumes at this one."
            ),
            *(s for s in classified.suggestions if "bug in dbinit_pipeline" not in s),
        ]
        return MigrationError(
            message,
            code=classified.code if classified.code in _KEPT_CODES else ErrorCode.MIGRATION_FAILED,
            transient=classified.transient,
            suggestions=suggestions,
            details={
                "package": m.package,
                "revision": m.revision,
                "file": str(m.path),
                "line": line,
                "exception": type(exc).__name__,
                "statement": statement,
            },
        )
