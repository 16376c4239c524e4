"""MySQL and MariaDB through PyMySQL: DDL commits itself, so progress is kept per migration.

PyMySQL, not mysqlclient: it is pure Python (no libmysqlclient headers or compiler needed to
install, one wheel for every platform), it speaks to MySQL 5.7/8.x and MariaDB alike, and the
pipeline's queries are few and small, so mysqlclient's C speed buys nothing here.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

from sqlalchemy import Connection, Table, text
from sqlalchemy.engine import URL, Dialect
from sqlalchemy.exc import DBAPIError

from dbinit_pipeline.database.catalog import TableShape
from dbinit_pipeline.database.providers.base import LockCapacity, Provider
from dbinit_pipeline.errors import (
    ConfigurationError,
    DatabaseExists,
    DatabaseFault,
    ErrorCode,
    InputError,
    LockTimeout,
    UnsupportedError,
)

DEFAULT_COLLATION = "utf8mb4_unicode_ci"
CHARSET = "utf8mb4"
_COLLATION = re.compile(r"^utf8mb4_[a-z0-9_]+$")
# MySQL 5.7+ refuses user-lock names longer than 64 characters.
_LOCK_NAME_MAX = 64
_ER_DB_CREATE_EXISTS = 1007
# NUMERIC is DECIMAL; without precision and scale, DECIMAL(10, 0); without scale, scale 0.
_NUMERIC = re.compile(r"^(?:NUMERIC|DECIMAL)(?:\((\d+)(?:,\s*(\d+))?\))?$")
# FLOAT(p) is single precision up to p = 24 and DOUBLE above; DOUBLE PRECISION and REAL are DOUBLE.
_FLOAT = re.compile(r"^FLOAT\((\d+)\)$")
_DOUBLES = frozenset({"DOUBLE PRECISION", "REAL"})
# The display width MariaDB (and MySQL before 8.0.19) reports for an integer declared without one
# (INT's and signed BIGINT's are the catalog's synonyms already).
_INTEGER = re.compile(r"^(TINYINT|SMALLINT|MEDIUMINT|INTEGER|BIGINT)( UNSIGNED)?$")
_DISPLAY_WIDTH = {
    ("TINYINT", False): 4,
    ("SMALLINT", False): 6,
    ("MEDIUMINT", False): 9,
    ("TINYINT", True): 3,
    ("SMALLINT", True): 5,
    ("MEDIUMINT", True): 8,
    ("INTEGER", True): 10,
    ("BIGINT", True): 20,
}
_WIDTHS_UNTIL = (8, 0, 19)
# BLOB(n) and TEXT(n) become the smallest type that holds n bytes (n characters of the database's
# utf8mb4, 4 bytes each, for TEXT).
_SIZED = re.compile(r"^(BLOB|TEXT)\((\d+)\)$")
_SIZES = ((255, "TINY"), (65_535, ""), (16_777_215, "MEDIUM"))
# A collation alone: the catalog names its character set too.
_COLLATED = re.compile(r"^(.*) COLLATE (([A-Z0-9]+)_[A-Z0-9_]+)$")
# MariaDB's NATIONAL character set is utf8mb3, named with its default collation.
_NATIONAL = "NATIONAL "
_MARIADB_NATIONAL = " CHARACTER SET UTF8MB3 COLLATE UTF8MB3_GENERAL_CI"
# MariaDB keeps JSON as LONGTEXT in utf8mb4_bin (with a json_valid check); MySQL has a JSON type.
_MARIADB_JSON = "LONGTEXT CHARACTER SET UTF8MB4 COLLATE UTF8MB4_BIN"
# The share of max_connections in use from which the connection check degrades / fails.
CONNECTIONS_DEGRADED = 0.75
CONNECTIONS_UNHEALTHY = 0.9


def _mysql_code(exc: DBAPIError) -> int | None:
    args = getattr(exc.orig, "args", ())
    return args[0] if args and isinstance(args[0], int) else None


class MySQLProvider(Provider):
    name = "mysql"
    url_schemes = ("mysql", "mariadb")
    driver = "pymysql"
    default_port = 3306
    # Every account may read information_schema; `mysql` needs privileges most roles lack.
    maintenance_database = "information_schema"
    reserved_databases = frozenset({"mysql", "information_schema", "performance_schema", "sys"})
    max_identifier_length = 64
    transactional_ddl = False
    example_url = "mysql+pymysql://USER:PASSWORD@HOST:3306/"
    templates_unavailable = (
        "MySQL and MariaDB cannot create a database as a copy of another (no CREATE DATABASE ... "
        "TEMPLATE): every database is built by replaying its migrations"
    )

    # -- connections -----------------------------------------------------------------
    def normalize_url(self, url: URL) -> URL:
        """mysql+pymysql with utf8mb4 on the wire; a URL for another server kind is refused."""
        backend = url.get_backend_name()
        if backend not in ("mysql", "mariadb"):
            raise ConfigurationError(
                f"database.provider is mysql but the connection URL is for {backend!r}",
                code=ErrorCode.INVALID_CONNECTION_URL,
                suggestions=[
                    "Use a URL like mysql+pymysql://USER:PASSWORD@HOST:3306/ for MySQL or MariaDB,",
                    "or set database.provider to match the server.",
                ],
            )
        url = url.set(drivername=f"{self.name}+{self.driver}")
        if "charset" not in url.query:
            url = url.update_query_dict({"charset": CHARSET})
        return url

    # -- identifiers and databases ---------------------------------------------------
    def quote(self, identifier: str) -> str:
        return "`" + identifier.replace("`", "``") + "`"

    def validate_collation(self, conn: Connection, collation: str | None) -> str:
        """The collation to create databases with: a utf8mb4 collation this server knows."""
        chosen = collation or DEFAULT_COLLATION
        if not _COLLATION.fullmatch(chosen):
            raise InputError(
                f"database.collation {chosen[:80]!r} is not a utf8mb4 collation",
                code=ErrorCode.INVALID_COLLATION,
                suggestions=[f"Use a utf8mb4 collation such as {DEFAULT_COLLATION} or utf8mb4_bin."],
            )
        known = conn.execute(
            text("SELECT 1 FROM information_schema.COLLATIONS WHERE COLLATION_NAME = :c"), {"c": chosen}
        ).first()
        if known is None:
            raise InputError(
                f"database.collation {chosen!r} is not known to this server",
                code=ErrorCode.INVALID_COLLATION,
                suggestions=[
                    "List the server's choices: SELECT COLLATION_NAME FROM information_schema.COLLATIONS "
                    f"WHERE CHARACTER_SET_NAME = '{CHARSET}'.",
                    f"{DEFAULT_COLLATION} exists on MySQL 5.7+, 8.x and MariaDB.",
                ],
            )
        return chosen

    def database_exists(self, conn: Connection, name: str) -> bool:
        row = conn.execute(
            text("SELECT 1 FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = :name"), {"name": name}
        )
        return row.first() is not None

    def create_database(self, conn: Connection, name: str, *, collation: str | None = None) -> None:
        quoted = self.quote(self.validate_database_name(name))
        chosen = self.validate_collation(conn, collation)
        try:
            conn.execute(text(f"CREATE DATABASE {quoted} CHARACTER SET {CHARSET} COLLATE {chosen}"))
        except DBAPIError as exc:
            if not self.is_duplicate_database(exc):
                raise
            # Another session created it between the existence check and this statement:
            # transient, so the retry sees it and applies the if_exists policy to it.
            raise DatabaseExists(
                f"Database {name!r} was created by another session while this run was creating it",
                transient=True,
                suggestions=["Rerun: the database now exists and if_exists decides what happens to it."],
            ) from None

    def is_duplicate_database(self, exc: BaseException) -> bool:
        return isinstance(exc, DBAPIError) and _mysql_code(exc) == _ER_DB_CREATE_EXISTS

    def drop_database(self, conn: Connection, name: str) -> None:
        quoted = self.quote(self.validate_database_name(name))
        # DROP DATABASE waits for other sessions' metadata locks, by default for a year.
        conn.execute(text("SET SESSION lock_wait_timeout = 30"))
        conn.execute(text(f"DROP DATABASE IF EXISTS {quoted}"))

    # -- locks -----------------------------------------------------------------------
    def lock_name(self, database: str) -> str:
        """The GET_LOCK name of `database`'s initialization lock (at most 64 characters)."""
        name = f"dbinit:{database}"
        if len(name) > _LOCK_NAME_MAX:
            name = f"dbinit:{database[:40]}:{self.lock_key(database)}"
        return name

    def _holder(self, conn: Connection, lock: str) -> str:
        holder_id = conn.execute(text("SELECT IS_USED_LOCK(:n)"), {"n": lock}).scalar()
        if holder_id is None:
            return ""
        row = conn.execute(
            text("SELECT USER, HOST, COMMAND, TIME FROM information_schema.PROCESSLIST WHERE ID = :id"),
            {"id": holder_id},
        ).first()
        if row is None:
            # Without the PROCESS privilege only one's own sessions are visible.
            return f" (server connection {holder_id})"
        return f" (server connection {holder_id}, {row[0]}@{row[1]}, {row[2]} for {row[3]} s)"

    def session_lock_acquire(self, conn: Connection, database: str, timeout_s: float) -> None:
        """GET_LOCK the initialization lock of `database`, or raise `LockTimeout` naming its holder."""
        lock = self.lock_name(database)
        got = conn.execute(text("SELECT GET_LOCK(:n, :t)"), {"n": lock, "t": max(timeout_s, 0.0)}).scalar()
        if got == 1:
            return
        if got is None:
            raise DatabaseFault(f"GET_LOCK({lock!r}) failed on the server")
        raise LockTimeout(
            f"Another initialization of database {database!r} holds its lock "
            f"{lock!r}{self._holder(conn, lock)}; waited {timeout_s:.0f} s",
            suggestions=[
                "Wait for the other run to finish (see the Dagster UI), then rerun.",
                "Raise safety.lock_timeout in dbinit.yaml to wait longer.",
                "A stale holder: the lock is freed when its connection ends (KILL <connection> on the server).",
            ],
        )

    def lock_in_transaction(self, conn: Connection, database: str, timeout_s: float) -> None:
        raise UnsupportedError(
            "MySQL has no transaction-scoped lock, and its DDL commits the transaction anyway",
            suggestions=["Apply migrations per migration under session_lock (the runner does so)."],
        )

    @contextmanager
    def session_lock(self, conn: Connection, database: str, timeout_s: float) -> Iterator[None]:
        self.session_lock_acquire(conn, database, timeout_s)
        if conn.in_transaction():
            conn.commit()
        try:
            yield
        finally:
            if conn.in_transaction():
                conn.rollback()
            conn.execute(text("SELECT RELEASE_LOCK(:n)"), {"n": self.lock_name(database)})
            conn.commit()

    def set_statement_timeout(self, conn: Connection, seconds: float | None) -> None:
        """MariaDB's max_statement_time bounds every statement; MySQL's max_execution_time only
        bounds SELECT, which is what MySQL offers."""
        value = float(seconds or 0)
        try:
            conn.execute(text("SET SESSION max_statement_time = :s"), {"s": value})
        except Exception:
            conn.rollback()
            conn.execute(text("SET SESSION max_execution_time = :ms"), {"ms": int(value * 1000)})
        conn.commit()

    def end_orphaned_locks(self, conn: Connection, database: str) -> list[int]:
        """End the server connection that still holds `database`'s schema lock for a dead client.

        Call it only while holding the run lock of `database`: then no live initialization can
        hold the schema lock (only dbinit takes a lock of that name), and its holder is a
        connection whose client died in the middle of a long statement, which MySQL notices only
        when the statement ends. KILL CONNECTION frees the lock at once.
        """
        lock = self.lock_name(database)
        holder = conn.execute(text("SELECT IS_USED_LOCK(:n)"), {"n": lock}).scalar()
        mine = conn.execute(text("SELECT CONNECTION_ID()")).scalar()
        if holder is None or holder == mine:
            return []
        conn.execute(text(f"KILL CONNECTION {int(holder)}"))
        if conn.in_transaction():
            conn.commit()
        return [int(holder)]

    def lock_capacity(self, conn: Connection) -> LockCapacity:
        # InnoDB keeps row locks in the buffer pool and DDL commits at once: no lock table to fill.
        return LockCapacity(slots=None, per_transaction=None)

    def describe_model(self, table: Table, dialect: Dialect) -> TableShape:
        """The model as InnoDB keeps it: a unique index and a unique constraint are one UNIQUE KEY,
        which the catalog reads back as a unique constraint; and a foreign key whose columns do
        not lead some index (the primary key included) gets an index of its own."""
        shape = super().describe_model(table, dialect)
        unique = shape.unique | {cols for cols, is_unique in shape.indexes if is_unique}
        indexes = {ix for ix in shape.indexes if not ix[1]}
        for columns, _, _ in sorted(shape.foreign_keys):
            leading = [shape.primary_key, *unique, *(cols for cols, _ in indexes)]
            if not any(tuple(cols[: len(columns)]) == columns for cols in leading):
                indexes.add((columns, False))
        if unique == shape.unique and indexes == shape.indexes:
            return shape
        return replace(shape, unique=frozenset(unique), indexes=frozenset(indexes))

    def live_type(self, declared: str, dialect: Dialect) -> str:
        mariadb = bool(getattr(dialect, "is_mariadb", False))
        numeric = _NUMERIC.match(declared)
        if numeric is not None:
            precision, scale = numeric.group(1), numeric.group(2)
            return f"DECIMAL({precision or 10}, {scale or 0})"
        if declared == "JSON" and mariadb:
            return _MARIADB_JSON
        single = _FLOAT.match(declared)
        if single is not None:
            return "FLOAT" if int(single.group(1)) <= 24 else "DOUBLE"
        if declared in _DOUBLES:
            return "DOUBLE"
        widths = mariadb or tuple(dialect.server_version_info or _WIDTHS_UNTIL) < _WIDTHS_UNTIL
        integer = _INTEGER.match(declared)
        if integer is not None and widths:
            width = _DISPLAY_WIDTH.get((integer.group(1), bool(integer.group(2))))
            return f"{integer.group(1)}({width}){integer.group(2) or ''}" if width else declared
        if widths and declared in ("YEAR", "BIT"):
            return f"{declared}({4 if declared == 'YEAR' else 1})"
        sized = _SIZED.match(declared)
        if sized is not None:
            kind, size = sized.group(1), int(sized.group(2)) * (4 if sized.group(1) == "TEXT" else 1)
            return next((f"{prefix}{kind}" for limit, prefix in _SIZES if size <= limit), f"LONG{kind}")
        if declared.startswith(_NATIONAL) and mariadb:
            return declared.removeprefix(_NATIONAL) + _MARIADB_NATIONAL
        collated = _COLLATED.match(declared)
        if collated is not None and " CHARACTER SET " not in declared:
            return f"{collated.group(1)} CHARACTER SET {collated.group(3)} COLLATE {collated.group(2)}"
        return declared

    # -- what the server tells about itself ------------------------------------------
    def database_charset(self, conn: Connection, name: str) -> tuple[str, str] | None:
        """(character set, collation) of database `name`, None when it does not exist."""
        row = conn.execute(
            text(
                "SELECT DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME"
                " FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = :name"
            ),
            {"name": name},
        ).first()
        return (str(row[0]), str(row[1])) if row else None

    def connection_check(self, conn: Connection) -> dict[str, Any]:
        """Connections in use against max_connections, as the server counts them."""
        row = conn.execute(text("SHOW GLOBAL STATUS LIKE 'Threads_connected'")).first()
        limit = int(conn.execute(text("SELECT @@max_connections")).scalar() or 0)
        active = int(row[1]) if row else 0
        share = active / limit if limit else 0.0
        status = (
            "unhealthy"
            if share >= CONNECTIONS_UNHEALTHY
            else "degraded"
            if share >= CONNECTIONS_DEGRADED
            else "healthy"
        )
        return {"status": status, "active": active, "max_connections": limit}

    def permission_check(self, conn: Connection) -> dict[str, Any]:
        """Whether the connected account may create tables in the current database, read from the
        privilege tables: a CREATE TABLE probe rolled back afterwards is impossible here, since
        MySQL commits DDL at once."""
        grantee = (
            "CONCAT('''', SUBSTRING_INDEX(CURRENT_USER(), '@', 1), '''@''',"
            " SUBSTRING_INDEX(CURRENT_USER(), '@', -1), '''')"
        )
        found = conn.execute(
            text(
                "SELECT 'global' FROM information_schema.USER_PRIVILEGES"
                f" WHERE GRANTEE = {grantee} AND PRIVILEGE_TYPE = 'CREATE'"
                " UNION ALL SELECT TABLE_SCHEMA FROM information_schema.SCHEMA_PRIVILEGES"
                f" WHERE GRANTEE = {grantee} AND PRIVILEGE_TYPE = 'CREATE'"
                " AND DATABASE() LIKE TABLE_SCHEMA"
            )
        ).first()
        account = str(conn.execute(text("SELECT CURRENT_USER()")).scalar())
        if found is not None:
            return {
                "status": "healthy",
                "account": account,
                "can_create_tables": True,
                "granted_on": str(found[0]),
            }
        try:
            role = conn.execute(text("SELECT CURRENT_ROLE()")).scalar()
        except DBAPIError:  # MySQL 5.7 has no roles
            role = None
        if role not in (None, "", "NONE"):
            # Role grants are listed differently by MariaDB and MySQL 8: say so, do not guess.
            return {
                "status": "unknown",
                "account": account,
                "reason": f"{account} has no CREATE privilege of its own on this database; whether "
                f"its active role {role} grants one is not read on mysql",
            }
        return {
            "status": "unhealthy",
            "account": account,
            "can_create_tables": False,
            "reason": f"{account} has no CREATE privilege on this database (neither globally nor on "
            "the schema)",
        }

    def disk_check(self, conn: Connection) -> dict[str, Any]:
        """The database's size, and the free space of the server's data directory: as MariaDB's DISKS
        plugin reports it, else measured from here when the server runs on this host."""
        size = conn.execute(
            text(
                "SELECT COALESCE(SUM(DATA_LENGTH + INDEX_LENGTH), 0) FROM information_schema.TABLES"
                " WHERE TABLE_SCHEMA = DATABASE()"
            )
        ).scalar()
        datadir = str(conn.execute(text("SELECT @@datadir")).scalar() or "")
        database = conn.execute(text("SELECT DATABASE()")).scalar()
        result: dict[str, Any] = {"database_bytes": int(size or 0), "data_directory": datadir}
        reported = self._disks_plugin(conn, datadir)
        if "free_bytes" in reported:
            return {**result, **reported}
        measured = local_disk(conn.engine.url.host, datadir, str(database) if database else None)
        if "free_bytes" in measured:
            return {**result, **measured}
        return {
            **result,
            "status": "unknown",
            "reason": f"unavailable on mysql: {reported['reason']}, and {measured['reason']}",
        }

    def _disks_plugin(self, conn: Connection, datadir: str) -> dict[str, Any]:
        active = conn.execute(
            text(
                "SELECT 1 FROM information_schema.PLUGINS"
                " WHERE PLUGIN_NAME = 'DISKS' AND PLUGIN_STATUS = 'ACTIVE'"
            )
        ).first()
        if active is None:
            return {
                "reason": "the server reports free space only through MariaDB's DISKS plugin, which "
                "is not installed (INSTALL SONAME 'disks'; MySQL has no equivalent)"
            }
        try:
            disks = conn.execute(text("SELECT Path, Total, Available FROM information_schema.DISKS")).all()
        except DBAPIError:
            return {"reason": "information_schema.DISKS refused this account (it needs the FILE privilege)"}
        mounts = [d for d in disks if datadir.startswith(str(d[0]))]
        if not mounts:
            return {"reason": f"no disk in information_schema.DISKS holds {datadir}"}
        path, total_kb, free_kb = max(mounts, key=lambda d: len(str(d[0])))
        free = int(free_kb) * 1024
        return {
            "status": disk_status(free),
            "free_bytes": free,
            "total_bytes": int(total_kb) * 1024,
            "source": f"information_schema.DISKS ({path})",
        }


DISK_DEGRADED_BYTES = 2 * 1024**3
DISK_UNHEALTHY_BYTES = 256 * 1024**2


def disk_status(free_bytes: int) -> str:
    if free_bytes < DISK_UNHEALTHY_BYTES:
        return "unhealthy"
    return "degraded" if free_bytes < DISK_DEGRADED_BYTES else "healthy"


def on_this_host(host: str | None) -> bool:
    """Whether `host` is this machine (no host, a socket, loopback, or this machine's name)."""
    if not host or host.startswith("/") or host in ("localhost", socket.gethostname()):
        return True
    try:
        return ipaddress.ip_address(socket.gethostbyname(host)).is_loopback
    except (OSError, ValueError):
        return False


def local_disk(host: str | None, datadir: str, database: str | None) -> dict[str, Any]:
    """Free space of `datadir` measured from here, only when it is provably the server's own: the
    server is on this host and the directory holds the connected database's folder (a server in a
    container reports a path of its own filesystem, which may exist here too)."""
    if not on_this_host(host):
        return {"reason": f"the server runs on {host}, whose disk cannot be read from here"}
    marker = os.path.join(datadir, database) if database else datadir
    if not datadir or not os.path.isdir(marker):
        return {
            "reason": f"{marker} is not visible from this host (a server in a container or VM, "
            "or a data directory this user may not read)"
        }
    usage = shutil.disk_usage(datadir)
    return {
        "status": disk_status(usage.free),
        "free_bytes": usage.free,
        "total_bytes": usage.total,
        "source": f"{datadir} measured from this host",
    }
