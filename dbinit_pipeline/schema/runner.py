"""Apply package migrations through Alembic's operations, in dependency order, with a ledger.

The registry already knows the order (it validated the graph), so the runner walks the
ordered packages and runs each pending revision script's `upgrade()` with Alembic's `op`
bound to one connection: one transaction for the whole set on PostgreSQL, unless the set
would not fit the server's lock table. Only pending scripts are imported: when the ledger
and the files' checksums say nothing is pending, no script is loaded at all.
"""

from __future__ import annotations

import importlib.util
import io
import re
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from alembic.operations import Operations
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, event
from sqlalchemy.exc import DBAPIError

from dbinit_pipeline.errors import ChecksumMismatch, DbinitError, MigrationError, classify
from dbinit_pipeline.redaction import redact
from dbinit_pipeline.resources.database_server import DatabaseServer
from dbinit_pipeline.schema import ledger
from dbinit_pipeline.schema.ledger import LedgerEntry
from dbinit_pipeline.schema.package import Migration, Package

Progress = Callable[[str, int, int], None]
# Measured on PostgreSQL 18: creating a table with its indexes and foreign keys holds about
# 14 lock-table entries until commit.
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


def _load_script(migration: Migration) -> ModuleType:
    name = f"_dbinit_revision_{migration.package}_{migration.revision}"
    spec = importlib.util.spec_from_file_location(name, migration.path)
    if spec is None or spec.loader is None:
        raise MigrationError(f"Cannot load {migration.path}")
    module = importlib.util.module_from_spec(spec)
    try:
        sys.modules[name] = module
        spec.loader.exec_module(module)
    except Exception as exc:
        raise MigrationError(
            f"Package {migration.package!r}: {migration.path} cannot be imported: {type(exc).__name__}: {exc}",
            suggestions=[f"Fix {migration.path}; nothing was applied."],
            details={
                "package": migration.package,
                "revision": migration.revision,
                "file": str(migration.path),
            },
        ) from None
    finally:
        sys.modules.pop(name, None)
    if not callable(getattr(module, "upgrade", None)):
        raise MigrationError(f"Package {migration.package!r}: {migration.path} has no upgrade() function")
    return module


def check_history(packages: Sequence[Package], applied: dict[tuple[str, str], LedgerEntry]) -> None:
    """Raise before anything runs if an applied file changed, vanished, or history has a gap."""
    for pkg in packages:
        on_disk = {m.revision: m for m in pkg.migrations}
        for (name, revision), entry in applied.items():
            if name == pkg.name and revision not in on_disk:
                raise ChecksumMismatch(
                    f"Package {pkg.name!r}: revision {revision!r} ({entry.filename}) was applied "
                    f"but is no longer in {pkg.path / 'migrations'}",
                    code="applied_migration_missing",
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
                    code="history_gap",
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


def pending_of(packages: Sequence[Package], applied: dict[tuple[str, str], LedgerEntry]) -> list[Migration]:
    return [m for pkg in packages for m in pkg.migrations if m.key not in applied]


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
    ) -> None:
        self.server = server
        self.provider = server.provider
        self.database = database
        self.run_id = run_id
        self.lock_timeout = lock_timeout
        self.transaction_mode = transaction_mode
        self.progress = progress

    # -- reading -----------------------------------------------------------------------
    def applied(self, conn: Connection) -> dict[tuple[str, str], LedgerEntry]:
        return ledger.read(conn) if ledger.exists(conn) else {}

    def status(self, packages: Sequence[Package], *, database_exists: bool = True) -> list[PackageStatus]:
        """Applied and pending revisions per package."""
        applied: dict[tuple[str, str], LedgerEntry] = {}
        if database_exists:
            with self.server.connect(self.database) as conn:
                applied = self.applied(conn)
        return [
            PackageStatus(
                pkg.name,
                pkg.version,
                tuple(m.revision for m in pkg.migrations if m.key in applied),
                tuple(m.revision for m in pkg.migrations if m.key not in applied),
            )
            for pkg in packages
        ]

    # -- dry run -----------------------------------------------------------------------
    def plan_sql(self, packages: Sequence[Package], *, database_exists: bool) -> ApplyReport:
        """The SQL each pending revision would run (Alembic offline mode); changes nothing."""
        applied: dict[tuple[str, str], LedgerEntry] = {}
        if database_exists:
            with self.server.connect(self.database) as conn:
                applied = self.applied(conn)
        check_history(packages, applied)
        pending = pending_of(packages, applied)
        sql: dict[str, str] = {}
        outcomes: list[PackageOutcome] = []
        for pkg in packages:
            mine = [m for m in pending if m.package == pkg.name]
            if not mine:
                continue
            buffer = io.StringIO()
            ctx = MigrationContext.configure(
                dialect_name=self.provider.name,
                opts={"as_sql": True, "output_buffer": buffer, "literal_binds": True},
            )
            with Operations.context(ctx):
                for m in mine:
                    buffer.write(f"-- {pkg.name} {m.revision} ({m.path.name})\n")
                    _load_script(m).upgrade()
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
        started = time.perf_counter()
        with self.server.connect(self.database) as conn:
            created = not ledger.exists(conn)
            applied = {} if created else ledger.read(conn)
            check_history(packages, applied)
            pending = pending_of(packages, applied)
            if not pending:
                conn.rollback()
                return ApplyReport(duration_ms=int((time.perf_counter() - started) * 1000))
            mode, note = self._decide_mode(len(pending), conn)
            conn.rollback()
            if mode == "single":
                outcomes = self._apply_batch(conn, packages)
            elif mode == "per_package":
                outcomes = []
                for pkg in packages:
                    outcomes.extend(self._apply_batch(conn, [pkg]))
            else:
                with self.provider.session_lock(conn, self.database, self.lock_timeout):
                    outcomes = self._apply_each(conn, packages)
        applied_count = sum(len(o.revisions) for o in outcomes)
        return ApplyReport(
            packages=tuple(outcomes),
            migrations_applied=applied_count,
            transaction=mode,
            note=note,
            duration_ms=int((time.perf_counter() - started) * 1000),
            ledger_created=created,
        )

    def _apply_batch(self, conn: Connection, packages: Sequence[Package]) -> list[PackageOutcome]:
        """One transaction: lock, re-read the ledger under the lock, run, record, commit."""
        with conn.begin():
            self.provider.lock_in_transaction(conn, self.database, self.lock_timeout)
            ledger.ensure(conn)
            applied = ledger.read(conn)
            check_history(packages, applied)
            pending = pending_of(packages, applied)
            total = len(pending)
            entries: list[LedgerEntry] = []
            outcomes: list[PackageOutcome] = []
            ctx = MigrationContext.configure(connection=conn)
            done = 0
            with Operations.context(ctx):
                for pkg in packages:
                    mine = [m for m in pending if m.package == pkg.name]
                    if not mine:
                        continue
                    for m in mine:
                        entries.append(self._run_one(m))
                        done += 1
                        if self.progress:
                            self.progress(pkg.name, done, total)
                    outcomes.append(PackageOutcome(pkg.name, pkg.version, tuple(m.revision for m in mine)))
            ledger.record(conn, entries)
            applied_revs = {pkg.name: [m.revision for m in pkg.migrations] for pkg in packages}
            replaced = [r for pkg in packages if pkg.head for r in applied_revs[pkg.name]]
            ledger.set_heads(conn, replaced, [pkg.head for pkg in packages if pkg.head])
        return outcomes

    def _apply_each(self, conn: Connection, packages: Sequence[Package]) -> list[PackageOutcome]:
        """Where DDL commits by itself: record each migration as soon as it is applied, so a
        failure leaves a ledger that says exactly where to resume."""
        with conn.begin():
            ledger.ensure(conn)
            applied = ledger.read(conn)
        check_history(packages, applied)
        pending = pending_of(packages, applied)
        total = len(pending)
        outcomes: list[PackageOutcome] = []
        done = 0
        for pkg in packages:
            mine = [m for m in pending if m.package == pkg.name]
            for m in mine:
                with conn.begin():
                    ctx = MigrationContext.configure(connection=conn)
                    with Operations.context(ctx), _statements_of(conn) as executed:
                        try:
                            entry = self._run_one(m)
                        except MigrationError as exc:
                            _name_committed_statements(exc, m, executed)
                            raise
                    ledger.record(conn, [entry])
                    previous = [r.revision for r in pkg.migrations]
                    ledger.set_heads(conn, previous, [m.revision])
                done += 1
                if self.progress:
                    self.progress(pkg.name, done, total)
            if mine:
                outcomes.append(PackageOutcome(pkg.name, pkg.version, tuple(m.revision for m in mine)))
        return outcomes

    def _run_one(self, m: Migration) -> LedgerEntry:
        module = _load_script(m)
        t0 = time.perf_counter()
        try:
            module.upgrade()
        except DbinitError:
            raise
        except Exception as exc:
            raise self._migration_failure(m, exc) from None
        return LedgerEntry(
            package=m.package,
            revision=m.revision,
            checksum=m.checksum,
            filename=m.path.name,
            run_id=self.run_id,
            duration_ms=int((time.perf_counter() - t0) * 1000),
        )

    def _migration_failure(self, m: Migration, exc: BaseException) -> DbinitError:
        classified = classify(exc, during=f"applying {m.path.name}")
        statement = (
            redact(" ".join(str(exc.statement).split()))[:500] if isinstance(exc, DBAPIError) else None
        )
        cause = classified.message
        message = f"Package {m.package!r}, revision {m.revision} ({m.path}) failed: {cause}"
        if statement:
            message += f" | failing statement: {statement}"
        suggestions = [
            f"Fix {m.path} and rerun; "
            + (
                "the whole transaction was rolled back, so nothing of this stage was applied."
                if self.provider.transactional_ddl
                else "the migrations before it stay applied and the rerun resumes at this one."
            ),
            *classified.suggestions,
        ]
        return MigrationError(
            message,
            code="lock_table_full" if classified.code == "lock_table_full" else "migration_failed",
            transient=classified.transient,
            suggestions=suggestions,
            details={
                "package": m.package,
                "revision": m.revision,
                "file": str(m.path),
                "statement": statement,
            },
        )
