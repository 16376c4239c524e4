"""The ledger `dbinit_migrations`: what was applied, from which file (sha256), when, by which run.

Beside it, every package keeps Alembic's own bookkeeping in a version table of its own
(`Package.version_table`: `alembic_version_<package>` unless package.yaml names one), holding
exactly one row, its applied head, in the table structure Alembic creates: pointed at the
package's scripts and that table, `alembic current` shows the head and `alembic upgrade head`
has nothing to do.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy import Connection

LEDGER_TABLE = "dbinit_migrations"
VERSION_TABLE = "alembic_version"
SNAPSHOT_TABLE = "dbinit_schema_snapshots"
IN_PROGRESS_TABLE = "dbinit_in_progress"

metadata = sa.MetaData()
ledger = sa.Table(
    LEDGER_TABLE,
    metadata,
    sa.Column("package", sa.String(64), primary_key=True),
    sa.Column("revision", sa.String(64), primary_key=True),
    sa.Column("checksum", sa.String(64), nullable=False),
    sa.Column("filename", sa.String(255), nullable=False),
    sa.Column("applied_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("run_id", sa.String(64), nullable=False),
    sa.Column("duration_ms", sa.Integer(), nullable=False),
)
# Databases initialized before version tables were per package keep every package's head in
# this one table; a package's rows there are removed when its own table is written.
_legacy_metadata = sa.MetaData()
version_table = sa.Table(
    VERSION_TABLE,
    _legacy_metadata,
    sa.Column("version_num", sa.String(32), nullable=False),
    sa.PrimaryKeyConstraint("version_num", name="alembic_version_pkc"),
)
_version_tables: dict[str, sa.Table] = {}


def alembic_version_table(name: str) -> sa.Table:
    """A version table as Alembic builds it (`DefaultImpl.version_table_impl`); `name` may be
    `<schema>.<table>` (Alembic's `version_table_schema`)."""
    found = _version_tables.get(name)
    if found is None:
        schema, _, bare = name.rpartition(".")
        found = _version_tables[name] = sa.Table(
            bare,
            sa.MetaData(),
            sa.Column("version_num", sa.String(32), nullable=False),
            sa.PrimaryKeyConstraint("version_num", name=f"{bare}_pkc"),
            schema=schema or None,
        )
    return found


def set_version(
    conn: Connection,
    table_name: str,
    head: str,
    revisions: Sequence[str] = (),
    *,
    tables: set[str] | None = None,
) -> None:
    """Make `table_name` hold exactly `head` (created when missing); `revisions` (the package's)
    are removed from the legacy shared table where it still holds them. `tables`, the table
    names of the default schema as the caller read them, saves asking the catalog per package;
    a table created here is added to it."""
    table = alembic_version_table(table_name)
    if tables is None or table.schema is not None:
        table.create(conn, checkfirst=True)
    elif table.name not in tables:
        table.create(conn)
        tables.add(table.name)
    conn.execute(table.delete())
    conn.execute(table.insert(), [{"version_num": head}])
    legacy = VERSION_TABLE in tables if tables is not None else sa.inspect(conn).has_table(VERSION_TABLE)
    if table_name != VERSION_TABLE and revisions and legacy:
        conn.execute(version_table.delete().where(version_table.c.version_num.in_(list(revisions))))


def read_versions(conn: Connection, tables: Sequence[str]) -> dict[str, set[str]]:
    """The rows of each of `tables` (all must exist), in one query."""
    if not tables:
        return {}
    # Plain text with quoted names and the index as the tag: building and compiling one
    # SQLAlchemy select per table cost more than the query (0.1 s at 500 tables).
    quote = conn.dialect.identifier_preparer.quote

    def qualified(name: str) -> str:  # `schema.table` where a package lives in a schema of its own
        return ".".join(quote(part) for part in name.split(".", 1))

    query = " UNION ALL ".join(
        f"SELECT {i}, version_num FROM {qualified(name)}" for i, name in enumerate(tables)
    )
    found: dict[str, set[str]] = {name: set() for name in tables}
    for index, version in conn.execute(sa.text(query)).all():
        found[tables[int(index)]].add(version)
    return found


# What each package's migrations produced, taken under the lock right after they were applied:
# the expected shape of a package that declares no SQLAlchemy models.
snapshots = sa.Table(
    SNAPSHOT_TABLE,
    metadata,
    sa.Column("package", sa.String(64), primary_key=True),
    sa.Column("table_name", sa.String(128), primary_key=True),
    sa.Column("head", sa.String(64), nullable=False),
    sa.Column("shape", sa.Text(), nullable=False),
    sa.Column("run_id", sa.String(64), nullable=False),
    sa.Column("taken_at", sa.DateTime(timezone=True), nullable=False),
)


@dataclass(frozen=True)
class LedgerEntry:
    package: str
    revision: str
    checksum: str
    filename: str
    applied_at: datetime | None = None
    run_id: str = ""
    duration_ms: int = 0


def exists(conn: Connection) -> bool:
    """Whether the ledger table exists in the connected database."""
    return sa.inspect(conn).has_table(LEDGER_TABLE)


def ensure(conn: Connection) -> None:
    """Create the ledger and the version table when missing."""
    metadata.create_all(conn, checkfirst=True)


def read(conn: Connection) -> dict[tuple[str, str], LedgerEntry]:
    """Every applied migration, in one query."""
    rows = conn.execute(
        sa.select(
            ledger.c.package,
            ledger.c.revision,
            ledger.c.checksum,
            ledger.c.filename,
            ledger.c.applied_at,
            ledger.c.run_id,
            ledger.c.duration_ms,
        )
    ).all()
    return {(r[0], r[1]): LedgerEntry(r[0], r[1], r[2], r[3], r[4], r[5], r[6]) for r in rows}


def record(conn: Connection, entries: Sequence[LedgerEntry]) -> None:
    """Append applied migrations (one multi-row insert)."""
    if not entries:
        return
    now = datetime.now(UTC)
    conn.execute(
        ledger.insert(),
        [
            {
                "package": e.package,
                "revision": e.revision,
                "checksum": e.checksum,
                "filename": e.filename,
                "applied_at": e.applied_at or now,
                "run_id": e.run_id,
                "duration_ms": e.duration_ms,
            }
            for e in entries
        ],
    )


def read_snapshots(conn: Connection) -> dict[str, tuple[str, dict[str, str]]]:
    """Per package: the head its snapshot was taken at, and table -> shape JSON."""
    result: dict[str, tuple[str, dict[str, str]]] = {}
    rows = conn.execute(
        sa.select(snapshots.c.package, snapshots.c.head, snapshots.c.table_name, snapshots.c.shape)
    ).all()
    for package, head, table, shape in rows:
        result.setdefault(package, (head, {}))[1][table] = shape
    return result


# Where DDL is not transactional (MySQL, MariaDB): a row per migration that has started and not
# yet recorded its outcome, golang-migrate's "dirty" flag. Kept apart from `metadata` so that
# databases on transactional servers never get the table.
_progress_metadata = sa.MetaData()
in_progress = sa.Table(
    IN_PROGRESS_TABLE,
    _progress_metadata,
    sa.Column("package", sa.String(64), primary_key=True),
    sa.Column("revision", sa.String(64), primary_key=True),
    sa.Column("checksum", sa.String(64), nullable=False),
    sa.Column("run_id", sa.String(64), nullable=False),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
)


@dataclass(frozen=True)
class InProgress:
    package: str
    revision: str
    checksum: str
    run_id: str
    started_at: datetime


def ensure_in_progress(conn: Connection) -> None:
    _progress_metadata.create_all(conn, checkfirst=True)


def read_in_progress(conn: Connection) -> list[InProgress]:
    if not sa.inspect(conn).has_table(IN_PROGRESS_TABLE):
        return []
    rows = conn.execute(
        sa.select(
            in_progress.c.package,
            in_progress.c.revision,
            in_progress.c.checksum,
            in_progress.c.run_id,
            in_progress.c.started_at,
        ).order_by(in_progress.c.started_at)
    ).all()
    return [InProgress(*r) for r in rows]


def mark_in_progress(conn: Connection, package: str, revision: str, checksum: str, run_id: str) -> None:
    conn.execute(
        in_progress.insert().values(
            package=package, revision=revision, checksum=checksum, run_id=run_id, started_at=datetime.now(UTC)
        )
    )


def clear_in_progress(conn: Connection, package: str, revision: str) -> int:
    result = conn.execute(
        in_progress.delete().where(in_progress.c.package == package, in_progress.c.revision == revision)
    )
    return int(result.rowcount or 0)


# A database created as a copy of a template (templates.py) says so here, beside the ledger whose
# rows it inherited from the run that built the template. Its own metadata: `ensure` never
# creates it in a database that was replayed.
CLONES_TABLE = "dbinit_template_clones"
clone_metadata = sa.MetaData()
clones = sa.Table(
    CLONES_TABLE,
    clone_metadata,
    sa.Column("cloned_at", sa.DateTime(timezone=True), primary_key=True),
    sa.Column("template_hash", sa.String(64), nullable=False),
    sa.Column("template_database", sa.String(64), nullable=False),
    sa.Column("built_by_run", sa.String(64), nullable=False),
    sa.Column("cloned_by_run", sa.String(64), nullable=False),
    sa.Column("note", sa.Text(), nullable=False),
)
