"""Adopt a database that an application's own Alembic built: record where each history stands.

For every package whose version table holds one of its revisions (or the one `--at` names), the
revisions up to that point go into the ledger as adopted (checksums of today's files, the
adoption's run id), with a row each in `dbinit_adoptions` saying so; `dbinit init` then applies
only what is later. Before anything is recorded, the live tables are compared with what the
adopted revisions declare: the package's models when it is adopted at its head, else the shape
the revisions produce when replayed on a scratch database of the same server.

Invariants:
- The application's version table is never written when it holds a row; an empty or missing one
  gets exactly the adopted revision, in Alembic's own table structure (what `alembic stamp` does).
- Any error (unknown revision, two heads, drift, a lock that is not free) changes nothing.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Connection

from dbinit_pipeline.database.catalog import TableShape, diff
from dbinit_pipeline.database.server import DatabaseServer
from dbinit_pipeline.errors import ApprovalError, DbinitError, ErrorCode, InputError, MigrationError
from dbinit_pipeline.migrations import adoptions as adoptions_record
from dbinit_pipeline.migrations import ledger
from dbinit_pipeline.migrations.alembic_project import apply_all
from dbinit_pipeline.migrations.ledger import LedgerEntry
from dbinit_pipeline.migrations.package import Migration, Package
from dbinit_pipeline.migrations.runner import MigrationRunner
from dbinit_pipeline.verify.expected import load_models


@dataclass(frozen=True)
class Position:
    """Where one package's history stands in the database, and what adopting it records."""

    package: str
    version_table: str
    at: str
    source: str  # "<table> holds <rev>" or "--at <rev>"
    revisions: tuple[str, ...]  # to record, in apply order
    stamp: bool  # the version table is empty or missing and gets `at`

    def as_dict(self) -> dict[str, Any]:
        return {
            "package": self.package,
            "version_table": self.version_table,
            "at": self.at,
            "source": self.source,
            "revisions": list(self.revisions),
            "writes_version_table": self.stamp,
        }


@dataclass(frozen=True)
class AdoptionReport:
    database: str
    run_id: str
    positions: tuple[Position, ...]
    compared_with: dict[str, str] = field(default_factory=dict)  # package -> models | replay
    drift: dict[str, list[str]] = field(default_factory=dict)  # table -> differences
    accepted_drift: bool = False
    dry_run: bool = False
    recorded: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "database_name": self.database,
            "run_id": self.run_id,
            "dry_run": self.dry_run,
            "packages": [p.as_dict() for p in self.positions],
            "revisions_adopted": 0 if self.dry_run else self.recorded,
            "revisions_to_adopt": sum(len(p.revisions) for p in self.positions),
            "verified_against": self.compared_with,
            "drift": self.drift,
            "accepted_drift": self.accepted_drift,
        }


def _ancestors(pkg: Package, revision: str) -> list[Migration]:
    """`revision` and every revision of `pkg` it stands on, in apply order."""
    by_rev = {m.revision: m for m in pkg.migrations}
    wanted: set[str] = set()
    todo = [revision]
    while todo:
        rev = todo.pop()
        if rev in wanted or rev not in by_rev:
            continue
        wanted.add(rev)
        m = by_rev[rev]
        todo.extend(m.down_revisions)
        todo.extend(d for d in m.depends_on if d in by_rev)
    return [m for m in pkg.migrations if m.revision in wanted]


def _unknown(pkg: Package, revision: str, where: str) -> InputError:
    folder = pkg.migrations_dir or pkg.path / "migrations"
    return InputError(
        f"Package {pkg.name!r}: {where} names revision {revision!r}, which is not among its files "
        f"({folder}); nothing was adopted",
        code=ErrorCode.ADOPT_UNKNOWN_REVISION,
        suggestions=[
            "Install the version of the application whose history reaches that revision "
            "(the database is newer than the files), or name an existing revision with --at.",
        ],
        details={"package": pkg.name, "revision": revision},
    )


def find_positions(
    conn: Connection,
    packages: Sequence[Package],
    *,
    package: str | None = None,
    at: str | None = None,
) -> list[Position]:
    """Where each package's history stands (or the one `package` at `at`), read from the version
    tables; packages already in the ledger are left as they are."""
    names = {p.name for p in packages}
    if package is not None and package not in names:
        raise InputError(
            f"No package named {package!r} (known: {', '.join(sorted(names)) or 'none'}); nothing was adopted",
            code=ErrorCode.ADOPT_UNKNOWN_PACKAGE,
            suggestions=["Name a package of dbinit.yaml's packages.paths with --package."],
        )
    tables = set(sa.inspect(conn).get_table_names())
    applied = ledger.read(conn) if ledger.LEDGER_TABLE in tables else {}
    chosen = [p for p in packages if package is None or p.name == package]
    wanted_tables = sorted({p.version_table for p in chosen} & tables | ({ledger.VERSION_TABLE} & tables))
    rows = ledger.read_versions(conn, wanted_tables)
    owners: dict[str, list[Package]] = {}
    for p in packages:
        owners.setdefault(p.version_table, []).append(p)
    positions: list[Position] = []
    for pkg in chosen:
        revisions = {m.revision for m in pkg.migrations}
        held = rows.get(pkg.version_table, set())
        mine = sorted(held & revisions)
        if len(owners[pkg.version_table]) == 1:
            strangers = sorted(held - revisions)
            if strangers and (at is None or package is None):
                raise _unknown(pkg, strangers[0], f"its version table {pkg.version_table}")
        if len(mine) > 1:
            raise InputError(
                f"Package {pkg.name!r}: its version table {pkg.version_table} holds {len(mine)} heads "
                f"({', '.join(mine)}); dbinit keeps one head per package. Nothing was adopted",
                code=ErrorCode.ADOPT_MULTIPLE_HEADS,
                suggestions=[
                    "Merge the branches with the application's own tooling (alembic merge, then "
                    "alembic upgrade heads), then adopt.",
                ],
                details={"package": pkg.name, "heads": mine},
            )
        if (
            not mine
            and pkg.version_table != ledger.VERSION_TABLE
            and rows.get(ledger.VERSION_TABLE, set()) & revisions
            and not any(m.key in applied for m in pkg.migrations)
        ):
            found = sorted(rows[ledger.VERSION_TABLE] & revisions)[0]
            raise InputError(
                f"Package {pkg.name!r}: its history stands at {found} in {ledger.VERSION_TABLE}, but dbinit "
                f"reads {pkg.version_table} for it; adopting would leave the application's table behind. "
                "Nothing was adopted",
                code=ErrorCode.ADOPT_VERSION_TABLE_MISMATCH,
                suggestions=[
                    f"Add `version_table: {ledger.VERSION_TABLE}` to {pkg.manifest_path}, then adopt."
                ],
            )
        if package is not None and at is not None:
            if at not in revisions:
                raise _unknown(pkg, at, "--at")
            if mine and mine[0] != at:
                raise InputError(
                    f"Package {pkg.name!r}: its version table {pkg.version_table} holds {mine[0]}, not "
                    f"{at} as --at says; nothing was adopted",
                    code=ErrorCode.ADOPT_POSITION_CONFLICT,
                    suggestions=[f"Leave out --at (adopts {mine[0]}), or correct the version table first."],
                )
            point, source = at, f"--at {at}"
        elif mine:
            point, source = mine[0], f"{pkg.version_table} holds {mine[0]}"
        else:
            continue
        upto = _ancestors(pkg, point)
        keep = {m.key for m in upto}
        beyond = [k for k in applied if k[0] == pkg.name and k not in keep]
        if beyond:
            raise InputError(
                f"Package {pkg.name!r}: the ledger already records {', '.join(r for _, r in beyond)}, past "
                f"{point}; nothing was adopted",
                code=ErrorCode.ADOPT_POSITION_CONFLICT,
                suggestions=["Adopt at the ledger's head or later (dbinit status ENV shows it)."],
            )
        todo = tuple(m.revision for m in upto if m.key not in applied)
        if todo:
            positions.append(Position(pkg.name, pkg.version_table, point, source, todo, stamp=not mine))
    return positions


def _truncated(packages: Sequence[Package], keep: set[tuple[str, str]]) -> list[Package]:
    out = []
    for pkg in packages:
        mine = tuple(m for m in pkg.migrations if m.key in keep)
        if mine:
            out.append(replace(pkg, migrations=mine))
    return out


def _bookkeeping(packages: Sequence[Package]) -> set[str]:
    return {p.version_table for p in packages} | {ledger.VERSION_TABLE, adoptions_record.ADOPTIONS_TABLE}


def declared_shapes(
    server: DatabaseServer,
    database: str,
    packages: Sequence[Package],
    keep: set[tuple[str, str]],
    *,
    collation: str | None = None,
    lock_timeout: float = 60.0,
) -> dict[str, dict[str, TableShape]]:
    """Per package, the tables its revisions in `keep` produce, replayed (dependencies first) on a
    scratch database of the same server that is dropped afterwards."""
    scratch = f"{database[:40]}_adopt_{uuid.uuid4().hex[:8]}"
    with server.connect(autocommit=True) as conn:
        server.provider.create_database(conn, scratch, collation=collation)
    shapes: dict[str, dict[str, TableShape]] = {}
    try:
        runner = MigrationRunner(server, scratch, run_id="adopt-replay", lock_timeout=lock_timeout)
        skip = _bookkeeping(packages)
        before: set[str] = set()
        for pkg in _truncated(packages, keep):
            try:
                apply_all(runner, [pkg])
            except DbinitError as exc:
                exc.message = (
                    f"Verifying the adoption replays the adopted revisions on a scratch database, and "
                    f"that failed (nothing of {database!r} was changed): {exc.message}"
                )
                exc.suggestions.insert(
                    0,
                    f"Declare the application's models in {pkg.manifest_path} (models: module:Base): "
                    "adopting at the head then compares with them instead of replaying.",
                )
                raise
            with server.connect(scratch) as conn:
                now = {t for t in sa.inspect(conn).get_table_names() if not t.startswith("dbinit_")} - skip
                shapes[pkg.name] = server.provider.describe_live(conn, sorted(now - before))
                conn.rollback()
            before = now
    finally:
        with server.connect(autocommit=True) as conn:
            server.provider.drop_database(conn, scratch)
    return shapes


def compare(
    server: DatabaseServer,
    database: str,
    packages: Sequence[Package],
    positions: Sequence[Position],
    *,
    collation: str | None = None,
    lock_timeout: float = 60.0,
) -> tuple[dict[str, str], dict[str, list[str]]]:
    """(package -> what it was compared with, table -> drift) for the adopted packages."""
    by_name = {p.name: p for p in packages}
    expected: dict[str, dict[str, TableShape]] = {}
    sources: dict[str, str] = {}
    replay: list[Position] = []
    with server.connect(database) as conn:
        dialect = conn.dialect
    for pos in positions:
        pkg = by_name[pos.package]
        metadata = load_models(pkg) if pos.at == pkg.head else None
        if metadata is not None:
            expected[pkg.name] = {
                t.name: server.provider.describe_model(t, dialect) for t in metadata.tables.values()
            }
            sources[pkg.name] = "models"
        else:
            replay.append(pos)
    if replay:
        with server.connect(database) as conn:
            applied = ledger.read(conn) if ledger.exists(conn) else {}
            conn.rollback()
        keep = set(applied) | {(p.package, r) for p in positions for r in p.revisions}
        replayed = declared_shapes(
            server, database, packages, keep, collation=collation, lock_timeout=lock_timeout
        )
        for pos in replay:
            expected[pos.package] = replayed.get(pos.package, {})
            sources[pos.package] = "replay of the adopted revisions on a scratch database"
    tables = sorted({t for shapes in expected.values() for t in shapes})
    with server.connect(database) as conn:
        live = server.provider.describe_live(conn, tables)
        conn.rollback()
    drift: dict[str, list[str]] = {}
    for shapes in expected.values():
        for name, shape in sorted(shapes.items()):
            found = diff(shape, live.get(name))
            if found:
                drift[name] = found
    return sources, drift


def adopt(
    server: DatabaseServer,
    database: str,
    packages: Sequence[Package],
    *,
    package: str | None = None,
    at: str | None = None,
    dry_run: bool = False,
    accept_drift: bool = False,
    run_id: str | None = None,
    lock_timeout: float = 60.0,
    collation: str | None = None,
    approve: Callable[[], frozenset[tuple[str, str, str]] | None] | None = None,
) -> AdoptionReport:
    """Adopt `database`: verify, then record in the ledger (a dry run only verifies and reports).

    `approve` uses up the approval of a protected environment and returns the (package, revision,
    sha256) it covers. It is called last, under the database's lock, once every check passed and
    just before the rows are written: an adoption that fails before that leaves the approval for
    the next attempt."""
    if (package is None) != (at is None):
        raise InputError(
            "--package and --at go together: name the package and the revision it stands at",
            code=ErrorCode.ADOPT_BAD_ARGUMENTS,
            suggestions=[
                "dbinit adopt ENV (reads every version table), or dbinit adopt ENV --package NAME --at REV"
            ],
        )
    run = run_id or f"adopt-{uuid.uuid4().hex[:12]}"
    with server.connect(autocommit=True) as conn:
        if not server.provider.database_exists(conn, database):
            raise InputError(
                f"Database {database!r} does not exist: there is nothing to adopt",
                code=ErrorCode.DATABASE_MISSING,
                suggestions=["Check --database-name; a new database needs dbinit init, not adopt."],
            )
    with server.connect(database) as conn:
        positions = find_positions(conn, packages, package=package, at=at)
        conn.rollback()
    if not positions:
        raise InputError(
            f"Nothing to adopt in {database!r}: no package's version table holds one of its revisions "
            "that the ledger does not already record",
            code=ErrorCode.ADOPT_NOTHING,
            suggestions=[
                "Name the package and its revision: dbinit adopt ENV --package NAME --at REVISION.",
                "Or point the package's version_table (package.yaml) at the application's table.",
            ],
        )
    sources, drift = compare(
        server, database, packages, positions, collation=collation, lock_timeout=lock_timeout
    )
    report = AdoptionReport(database, run, tuple(positions), sources, drift, accept_drift, dry_run)
    if drift and not accept_drift and not dry_run:
        lines = [f"{t}: {'; '.join(d)}" for t, d in drift.items()]
        raise MigrationError(
            f"The live schema of {database!r} differs from what the adopted revisions declare, in "
            f"{len(drift)} table(s): " + " | ".join(lines[:10]) + ". Nothing was adopted",
            code=ErrorCode.ADOPT_DRIFT,
            suggestions=[
                "Bring the tables in line with the application's history, or adopt anyway with "
                "--accept-drift (the response and dbinit_adoptions record the differences).",
            ],
            details={"drift": drift},
        )
    if dry_run:
        return report
    by_name = {p.name: p for p in packages}
    recorded = _record(server, database, by_name, positions, report, lock_timeout, package, at, approve)
    return replace(report, recorded=recorded)


def adoption_key(
    positions: Sequence[Position], packages: Sequence[Package]
) -> tuple[tuple[str, str, str], ...]:
    """(package, revision, sha256) of every revision adopting records: what an approval covers."""
    by_key = {m.key: m for p in packages for m in p.migrations}
    return tuple((p.package, r, by_key[(p.package, r)].checksum) for p in positions for r in p.revisions)


def _refuse_unapproved(
    positions: Sequence[Position],
    by_name: dict[str, Package],
    approved: frozenset[tuple[str, str, str]] | None,
) -> None:
    if approved is None:
        return
    outside = [k for k in adoption_key(positions, list(by_name.values())) if k not in approved]
    if outside:
        raise ApprovalError(
            "Revisions outside the approved adoption plan: "
            + ", ".join(f"{p}:{r}" for p, r, _ in outside[:10])
            + "; nothing was adopted",
            code=ErrorCode.PLAN_CHANGED,
            suggestions=["Review the adoption (dbinit adopt ENV --dry-run) and have it approved again."],
        )


def _record(
    server: DatabaseServer,
    database: str,
    by_name: dict[str, Package],
    positions: Sequence[Position],
    report: AdoptionReport,
    lock_timeout: float,
    package: str | None,
    at: str | None,
    approve: Callable[[], frozenset[tuple[str, str, str]] | None] | None,
) -> int:
    """Under the database's lock, in one transaction: positions re-read, the approval used,
    ledger and adoption rows written, empty version tables stamped."""
    now = datetime.now(UTC)
    with (
        server.connect(database) as conn,
        server.provider.session_lock(conn, database, lock_timeout),
        conn.begin(),
    ):
        ledger.ensure(conn)
        adoptions_record.metadata.create_all(conn, checkfirst=True)
        again = find_positions(conn, list(by_name.values()), package=package, at=at)
        if again != list(positions):
            raise MigrationError(
                f"The version tables of {database!r} changed while it was being verified; "
                "nothing was adopted",
                code=ErrorCode.ADOPT_CHANGED,
                suggestions=["Run dbinit adopt again."],
            )
        _refuse_unapproved(positions, by_name, approve() if approve is not None else None)
        entries: list[LedgerEntry] = []
        rows: list[dict[str, Any]] = []
        for pos in positions:
            pkg = by_name[pos.package]
            files = {m.revision: m for m in pkg.migrations}
            for rev in pos.revisions:
                m = files[rev]
                entries.append(LedgerEntry(pkg.name, rev, m.checksum, m.path.name, now, report.run_id))
                rows.append(
                    {
                        "package": pkg.name,
                        "revision": rev,
                        "how": "adopted",
                        "run_id": report.run_id,
                        "adopted_at": now,
                        "source": pos.source[:255],
                        "accepted_drift": bool(report.drift),
                        "drift": json.dumps(report.drift, sort_keys=True),
                    }
                )
            if pos.stamp:
                # Only added: a shared table keeps every other history's row.
                table = ledger.alembic_version_table(pos.version_table)
                table.create(conn, checkfirst=True)
                conn.execute(table.insert(), [{"version_num": pos.at}])
        ledger.record(conn, entries)
        conn.execute(adoptions_record.adoptions.insert(), rows)
    return len(entries)
