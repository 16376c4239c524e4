"""PostgreSQL: transactional DDL, advisory locks, pg_catalog."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, text

from dbinit_pipeline.errors import LockTimeout
from dbinit_pipeline.providers.base import Catalog, LockCapacity, Provider


class PostgresProvider(Provider):
    name = "postgresql"
    driver = "psycopg"
    default_port = 5432
    maintenance_database = "postgres"
    reserved_databases = frozenset({"postgres", "template0", "template1"})
    max_identifier_length = 63
    transactional_ddl = True

    def quote(self, identifier: str) -> str:
        return '"' + identifier.replace('"', '""') + '"'

    def database_exists(self, conn: Connection, name: str) -> bool:
        row = conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": name})
        return row.first() is not None

    def create_database(self, conn: Connection, name: str, *, collation: str | None = None) -> None:
        conn.execute(text(f"CREATE DATABASE {self.quote(self.validate_database_name(name))}"))

    def drop_database(self, conn: Connection, name: str) -> None:
        conn.execute(
            text(f"DROP DATABASE IF EXISTS {self.quote(self.validate_database_name(name))} WITH (FORCE)")
        )

    def _wait_for_lock(self, conn: Connection, database: str, timeout_s: float, function: str) -> None:
        key = self.lock_key(database)
        deadline = time.monotonic() + timeout_s
        while not conn.execute(text(f"SELECT {function}(:k)"), {"k": key}).scalar():
            if time.monotonic() >= deadline:
                holder = conn.execute(
                    text(
                        "SELECT a.pid, a.application_name, a.backend_start FROM pg_locks l"
                        " JOIN pg_stat_activity a ON a.pid = l.pid"
                        " WHERE l.locktype = 'advisory' AND l.objid = :k AND l.granted LIMIT 1"
                    ),
                    {"k": key},
                ).first()
                who = (
                    f" (server process {holder[0]}, {holder[1] or 'unknown client'}, since {holder[2]})"
                    if holder
                    else ""
                )
                raise LockTimeout(
                    f"Another initialization of database {database!r} holds its lock{who}; "
                    f"waited {timeout_s:.0f} s",
                    suggestions=[
                        "Wait for the other run to finish (see the Dagster UI), then rerun.",
                        "Raise safety.lock_timeout in dbinit.yaml to wait longer.",
                    ],
                )
            time.sleep(0.2)

    def lock_in_transaction(self, conn: Connection, database: str, timeout_s: float) -> None:
        conn.execute(
            text("SELECT set_config('lock_timeout', :t, true)"),
            {"t": f"{max(int(timeout_s * 1000), 1)}ms"},
        )
        self._wait_for_lock(conn, database, timeout_s, "pg_try_advisory_xact_lock")

    @contextmanager
    def session_lock(self, conn: Connection, database: str, timeout_s: float) -> Iterator[None]:
        self._wait_for_lock(conn, database, timeout_s, "pg_try_advisory_lock")
        if conn.in_transaction():
            conn.commit()
        try:
            yield
        finally:
            if conn.in_transaction():
                conn.rollback()
            conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": self.lock_key(database)})
            conn.commit()

    def lock_capacity(self, conn: Connection) -> LockCapacity:
        row = conn.execute(
            text(
                "SELECT current_setting('max_locks_per_transaction')::int,"
                " current_setting('max_connections')::int,"
                " current_setting('max_prepared_transactions')::int"
            )
        ).one()
        per_tx, connections, prepared = int(row[0]), int(row[1]), int(row[2])
        return LockCapacity(slots=per_tx * (connections + prepared), per_transaction=per_tx)

    def catalog(self, conn: Connection) -> Catalog:
        tables = conn.execute(
            text(
                "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p')"
            )
        ).scalars()
        fks = conn.execute(
            text(
                "SELECT cl.relname, rf.relname FROM pg_constraint co"
                " JOIN pg_class cl ON cl.oid = co.conrelid"
                " JOIN pg_class rf ON rf.oid = co.confrelid"
                " JOIN pg_namespace n ON n.oid = cl.relnamespace"
                " WHERE co.contype = 'f' AND n.nspname = current_schema()"
            )
        ).all()
        return Catalog(frozenset(tables), frozenset((r[0], r[1]) for r in fks))
