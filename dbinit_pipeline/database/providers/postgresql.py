"""PostgreSQL: transactional DDL, advisory locks, pg_catalog."""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
import shutil
import socket
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, text
from sqlalchemy.engine import Dialect

from dbinit_pipeline.database.catalog import TableShape, reflect_live
from dbinit_pipeline.database.providers.base import DatabaseTemplate, LockCapacity, Provider, TemplateFailure
from dbinit_pipeline.database.providers.pg_catalog import read_shapes, table_digests_query
from dbinit_pipeline.errors import LockTimeout

# FLOAT(p) is `real` up to 24 bits of precision, else (and without p) `double precision`.
_FLOAT = re.compile(r"^FLOAT(?:\((\d+)\))?$")
# NUMERIC(p) has scale 0, which the catalog names.
_NUMERIC_PRECISION = re.compile(r"^NUMERIC\((\d+)\)$")
# SQLSTATEs: CREATE DATABASE of a name in use; a database with another session open; no such database.
_DUPLICATE_DATABASE = "42P04"
_UNIQUE_VIOLATION = "23505"
_OBJECT_IN_USE = "55006"
_INVALID_CATALOG_NAME = "3D000"


def sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE of a psycopg error, raw or wrapped by SQLAlchemy; None for anything else."""
    orig = getattr(exc, "orig", None)
    state = getattr(orig, "sqlstate", None) or getattr(exc, "sqlstate", None)
    return str(state) if state else None


class PostgresProvider(Provider):
    name = "postgresql"
    url_schemes = ("postgresql", "postgres")
    driver = "psycopg"
    default_port = 5432
    maintenance_database = "postgres"
    reserved_databases = frozenset({"postgres", "template0", "template1"})
    max_identifier_length = 63
    transactional_ddl = True
    example_url = "postgresql://USER:PASSWORD@HOST:5432/postgres"

    def quote(self, identifier: str) -> str:
        return '"' + identifier.replace('"', '""') + '"'

    def database_exists(self, conn: Connection, name: str) -> bool:
        row = conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": name})
        return row.first() is not None

    def connect_args(self) -> dict[str, object]:
        # `end_orphaned_locks` considers only sessions of this name.
        return {"application_name": "dbinit"}

    def create_database(self, conn: Connection, name: str, *, collation: str | None = None) -> None:
        conn.execute(text(f"CREATE DATABASE {self.quote(self.validate_database_name(name))}"))

    def is_duplicate_database(self, exc: BaseException) -> bool:
        state = sqlstate(exc)
        if state == _UNIQUE_VIOLATION:
            # Two CREATE DATABASE of one name at the same moment both pass the server's name
            # check; the later one then fails on pg_database's unique index instead.
            diag = getattr(getattr(exc, "orig", None) or exc, "diag", None)
            return getattr(diag, "constraint_name", None) == "pg_database_datname_index"
        return state == _DUPLICATE_DATABASE

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
                        " WHERE l.locktype = 'advisory' AND l.classid = 0 AND l.objid = :k"
                        " AND l.objsubid = 1 AND l.granted AND l.pid <> pg_backend_pid()"
                        " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
                        " LIMIT 1"
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

    # Advisory locks are scoped to the database of the session that takes them: the run lock is
    # always taken in `postgres`, so two URLs naming different maintenance databases still meet.
    lock_database = "postgres"

    def set_statement_timeout(self, conn: Connection, seconds: float | None) -> None:
        ms = int(seconds * 1000) if seconds else 0
        conn.execute(text("SELECT set_config('statement_timeout', :t, false)"), {"t": f"{ms}ms"})
        conn.commit()

    def end_orphaned_locks(self, conn: Connection, database: str) -> list[int]:
        """End the server processes that still hold `database`'s schema lock for a dead client.

        Call it only while holding the run lock of `database`: then no live initialization can
        hold the schema lock, and a holder is a backend whose client was killed in the middle of
        a statement (PostgreSQL notices a vanished client only when it next talks to it, so a
        long migration would otherwise run on, and block, until it ends). Ending it rolls its
        transaction back. Only dbinit's own connections are considered.
        """
        pids = [
            int(pid)
            for pid in conn.execute(
                text(
                    "SELECT l.pid FROM pg_locks l JOIN pg_database d ON d.oid = l.database"
                    " JOIN pg_stat_activity a ON a.pid = l.pid"
                    " WHERE l.locktype = 'advisory' AND l.classid = 0 AND l.objid = :k"
                    " AND l.objsubid = 1 AND l.granted AND d.datname = :db"
                    " AND a.application_name = 'dbinit' AND l.pid <> pg_backend_pid()"
                ),
                {"k": self.lock_key(database), "db": database},
            ).scalars()
        ]
        ended = [
            pid for pid in pids if conn.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid}).scalar()
        ]
        if conn.in_transaction():
            conn.commit()
        return ended

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

    def describe_live(self, conn: Connection, tables: Iterable[str] | None = None) -> dict[str, TableShape]:
        """Named tables are read from pg_catalog (`pg_catalog.read_shapes`: the same shapes in
        about half the time); those it leaves aside, and the whole schema, through reflection."""
        if tables is None:
            return reflect_live(conn)
        read = read_shapes(conn, tables)
        return {**read.shapes, **reflect_live(conn, read.fallback)} if read.fallback else read.shapes

    def live_type(self, declared: str, dialect: Dialect) -> str:
        numeric = _NUMERIC_PRECISION.match(declared)
        if numeric is not None:
            return f"NUMERIC({numeric.group(1)}, 0)"
        found = _FLOAT.match(declared)
        if found is None:
            return declared
        return "REAL" if found.group(1) and int(found.group(1)) <= 24 else "DOUBLE PRECISION"

    def table_digests(self, conn: Connection) -> dict[str, str] | None:
        query = table_digests_query(int((conn.dialect.server_version_info or (0,))[0]))
        return {str(name): str(digest) for name, digest in conn.execute(query).all()}

    def connection_check(self, conn: Connection) -> dict[str, Any]:
        row = conn.execute(
            text("SELECT count(*), current_setting('max_connections')::int FROM pg_stat_activity")
        ).one()
        active, limit = int(row[0]), int(row[1])
        return {"status": connection_status(active, limit), "active": active, "max_connections": limit}

    def disk_check(self, conn: Connection) -> dict[str, Any]:
        host = conn.engine.url.host or "localhost"
        directory: str | None = None
        if is_this_host(host):
            try:
                with conn.begin_nested():
                    directory = str(conn.execute(text("SELECT current_setting('data_directory')")).scalar())
            except Exception:
                directory = None
        return disk_report(host, directory)

    # -- template databases --------------------------------------------------------------------
    templates_supported = True
    # The first key of the two-key advisory locks that guard templates: apart from the run and
    # schema locks, which use the one-key form.
    TEMPLATE_LOCK_CLASS = 0x64627450

    def template_failure(self, exc: BaseException) -> TemplateFailure | None:
        state = sqlstate(exc)
        if state == _OBJECT_IN_USE:
            return "busy"
        return "missing" if state == _INVALID_CATALOG_NAME else None

    def list_templates(self, conn: Connection, prefix: str) -> list[DatabaseTemplate]:
        rows = conn.execute(
            text(
                "SELECT datname, datistemplate, datallowconn, shobj_description(oid, 'pg_database')"
                " FROM pg_database WHERE starts_with(datname, :prefix) ORDER BY datname"
            ),
            {"prefix": prefix},
        ).all()
        return [DatabaseTemplate(str(r[0]), bool(r[1]), bool(r[2]), r[3]) for r in rows]

    def clone_database(self, conn: Connection, name: str, template: str) -> None:
        conn.execute(
            text(
                f"CREATE DATABASE {self.quote(self.validate_database_name(name))}"
                f" TEMPLATE {self.quote(self.validate_database_name(template))}"
            )
        )

    def copy_to_template(self, conn: Connection, name: str, source: str, comment: str) -> None:
        quoted = self.quote(self.validate_database_name(name))
        conn.execute(
            text(f"CREATE DATABASE {quoted} TEMPLATE {self.quote(self.validate_database_name(source))}")
        )
        try:
            tag = "$dbinit_" + secrets.token_hex(6) + "$"  # a utility statement takes no parameters
            conn.exec_driver_sql(f"COMMENT ON DATABASE {quoted} IS {tag}{comment}{tag}")
            conn.execute(text(f"ALTER DATABASE {quoted} WITH IS_TEMPLATE true ALLOW_CONNECTIONS false"))
        except BaseException:
            conn.execute(text(f"DROP DATABASE IF EXISTS {quoted}"))
            raise

    def rename_database(self, conn: Connection, name: str, new_name: str) -> None:
        conn.execute(
            text(
                f"ALTER DATABASE {self.quote(self.validate_database_name(name))}"
                f" RENAME TO {self.quote(self.validate_database_name(new_name))}"
            )
        )

    def drop_template(self, conn: Connection, name: str) -> None:
        quoted = self.quote(self.validate_database_name(name))
        conn.execute(text(f"ALTER DATABASE {quoted} WITH IS_TEMPLATE false"))
        conn.execute(text(f"DROP DATABASE IF EXISTS {quoted}"))

    def try_template_lock(self, conn: Connection, name: str, *, shared: bool) -> bool:
        function = "pg_try_advisory_lock_shared" if shared else "pg_try_advisory_lock"
        return bool(
            conn.execute(
                text(f"SELECT {function}(:c, :k)"), {"c": self.TEMPLATE_LOCK_CLASS, "k": self.lock_key(name)}
            ).scalar()
        )

    def template_unlock(self, conn: Connection, name: str, *, shared: bool) -> None:
        function = "pg_advisory_unlock_shared" if shared else "pg_advisory_unlock"
        conn.execute(
            text(f"SELECT {function}(:c, :k)"), {"c": self.TEMPLATE_LOCK_CLASS, "k": self.lock_key(name)}
        )


def disk_report(host: str, directory: str | None) -> dict[str, Any]:
    """Disk space of a PostgreSQL server at `host` whose data directory is `directory` (None when
    the connecting role may not read it): known only when that directory is on this machine."""
    if not is_this_host(host):
        return {
            "status": "unknown",
            "reason": f"the server runs on {host}, not on this host: its disk cannot be read from here",
        }
    if directory is None:
        return {
            "status": "unknown",
            "reason": "the connecting role may not read data_directory (it needs pg_read_all_settings)",
        }
    return disk_status(directory)


CONNECTIONS_DEGRADED = 0.75
CONNECTIONS_UNHEALTHY = 0.9
DISK_DEGRADED_BYTES = 2 * 1024**3
DISK_UNHEALTHY_BYTES = 256 * 1024**2


def connection_status(active: int, limit: int) -> str:
    share = active / limit if limit else 0.0
    if share >= CONNECTIONS_UNHEALTHY:
        return "unhealthy"
    return "degraded" if share >= CONNECTIONS_DEGRADED else "healthy"


def is_this_host(host: str) -> bool:
    """Whether `host` names this machine (loopback, or one of its own addresses)."""
    if host.startswith("/") or host in ("localhost", socket.gethostname()):
        return True
    try:
        address = ipaddress.ip_address(socket.gethostbyname(host))
    except (OSError, ValueError):
        return False
    if address.is_loopback:
        return True
    try:
        own = {info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None)}
    except OSError:
        own = set()
    return str(address) in own


def disk_status(directory: str) -> dict[str, Any]:
    """Free bytes of the filesystem holding `directory`; unknown, with the reason, if unreadable."""
    if not os.path.isdir(directory):
        return {"status": "unknown", "reason": f"data directory {directory} is not visible from this process"}
    usage = shutil.disk_usage(directory)
    status = "healthy"
    if usage.free < DISK_UNHEALTHY_BYTES:
        status = "unhealthy"
    elif usage.free < DISK_DEGRADED_BYTES or usage.free < usage.total * 0.05:
        status = "degraded"
    return {
        "status": status,
        "free_bytes": usage.free,
        "total_bytes": usage.total,
        "data_directory": directory,
    }
