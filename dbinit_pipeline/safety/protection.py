"""Protection as a property of the database: a mark on the server, not a line of dbinit.yaml.

A run of a protected environment writes a row into `dbinit_protection` inside its target
database. Whatever environment a later run comes from, it may not recreate a marked database,
nor apply to it without an approval. The mark lives on the server, so no configuration file
(nor run config, nor --database-name) can take it away; removing it takes direct access to the
database (DROP TABLE dbinit_protection).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa

from dbinit_pipeline.clock import stamp
from dbinit_pipeline.database.server import DatabaseServer
from dbinit_pipeline.errors import ErrorCode, InputError, classify

PROTECTION_TABLE = "dbinit_protection"

_metadata = sa.MetaData()
_marks = sa.Table(
    PROTECTION_TABLE,
    _metadata,
    sa.Column("environment", sa.String(64), primary_key=True),
    sa.Column("run_id", sa.String(64), nullable=False),
    sa.Column("marked_at", sa.DateTime(timezone=True), nullable=False),
)


@dataclass(frozen=True)
class ProtectionMark:
    environment: str
    run_id: str
    marked_at: datetime


def read_mark(server: DatabaseServer, database: str) -> ProtectionMark | None:
    """The first protected environment that marked `database`, or None (also when it does not exist)."""
    try:
        conn = server.engine(database).connect()
    except Exception as exc:
        if classify(exc).code == ErrorCode.DATABASE_MISSING:
            return None
        raise
    with conn:
        if not sa.inspect(conn).has_table(PROTECTION_TABLE):
            conn.rollback()
            return None
        row = conn.execute(
            sa.select(_marks.c.environment, _marks.c.run_id, _marks.c.marked_at).order_by(_marks.c.marked_at)
        ).first()
        conn.rollback()
    return ProtectionMark(row[0], row[1], row[2]) if row else None


def write_mark(server: DatabaseServer, database: str, environment: str, run_id: str) -> None:
    """Mark `database` as belonging to the protected `environment` (idempotent)."""
    with server.connect(database) as conn, conn.begin():
        _metadata.create_all(conn, checkfirst=True)
        present = conn.execute(
            sa.select(_marks.c.environment).where(_marks.c.environment == environment)
        ).first()
        if present is None:
            conn.execute(
                _marks.insert().values(environment=environment, run_id=run_id, marked_at=datetime.now(UTC))
            )


def refuse_if_protected(
    mark: ProtectionMark | None,
    *,
    database: str,
    environment: str,
    recreate: bool,
    approved: bool,
) -> None:
    """Raise when a run from `environment` would recreate, or apply without approval to, a marked database."""
    if mark is None:
        return
    if not recreate and approved:
        return
    owner = mark.environment
    since = stamp(mark.marked_at) if mark.marked_at else "?"
    what = "recreate it" if recreate else "apply to it without an approval"
    raise InputError(
        f"Database {database!r} is protected: the protected environment {owner!r} initialized it "
        f"(run {mark.run_id}, {since}); a run of environment {environment!r} may not {what}",
        code=ErrorCode.DATABASE_PROTECTED,
        suggestions=[
            f"Initialize it from its own environment, with an approval: dbinit init {owner}",
            "Or give this environment its own database (database_name, or --database-name).",
            "A protected database is never recreated; if it really is a throw-away copy, remove the "
            f"mark by hand with direct access to the database: DROP TABLE {PROTECTION_TABLE}",
        ],
        details={"protected_by": owner, "marked_by_run": mark.run_id},
    )
