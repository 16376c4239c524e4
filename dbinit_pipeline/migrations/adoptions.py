"""The record of adoptions (`dbinit_adoptions`, beside the ledger): which revisions of a package
were recorded by `dbinit adopt` rather than run by dbinit, and the drift accepted when they were.

Invariant: a row's `drift` holds, per table, the lines `catalog.diff` gave when the adoption was
verified; with `accepted_drift` true, verify counts exactly those lines as accepted, never others.
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from sqlalchemy import Connection

ADOPTIONS_TABLE = "dbinit_adoptions"
metadata = sa.MetaData()
adoptions = sa.Table(
    ADOPTIONS_TABLE,
    metadata,
    sa.Column("package", sa.String(64), primary_key=True),
    sa.Column("revision", sa.String(64), primary_key=True),
    sa.Column("how", sa.String(16), nullable=False),  # always "adopted": recorded, never run by dbinit
    sa.Column("run_id", sa.String(64), nullable=False),
    sa.Column("adopted_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("source", sa.String(255), nullable=False),
    sa.Column("accepted_drift", sa.Boolean(), nullable=False),
    sa.Column("drift", sa.Text(), nullable=False),
)


def adopted_revisions(conn: Connection) -> dict[tuple[str, str], str]:
    """(package, revision) -> adoption run id, for `dbinit status`."""
    if not sa.inspect(conn).has_table(ADOPTIONS_TABLE):
        return {}
    return {
        (r[0], r[1]): r[2]
        for r in conn.execute(sa.select(adoptions.c.package, adoptions.c.revision, adoptions.c.run_id))
    }


def accepted_drift(conn: Connection) -> dict[str, frozenset[str]]:
    """Table -> the drift lines an adoption accepted with --accept-drift (read only where the
    table exists: the caller knows from the catalog it already read)."""
    rows = conn.execute(
        sa.select(adoptions.c.drift).where(adoptions.c.accepted_drift.is_(True)).distinct()
    ).scalars()
    accepted: dict[str, set[str]] = {}
    for raw in rows:
        for table, lines in json.loads(raw).items():
            accepted.setdefault(str(table), set()).update(str(line) for line in lines)
    return {table: frozenset(lines) for table, lines in accepted.items()}
