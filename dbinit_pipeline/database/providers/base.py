"""What a database provider must answer, independent of the dialect."""

from __future__ import annotations

import re
import secrets
import zlib
from abc import ABC, abstractmethod
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, text
from sqlalchemy.engine import URL

from dbinit_pipeline.errors import ErrorCode, InputError, UnsupportedError

_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")


@dataclass(frozen=True)
class LockCapacity:
    """How many object locks one transaction may take on this server (None: no such limit)."""

    slots: int | None
    per_transaction: int | None


class Provider(ABC):
    """One SQL dialect: identifiers, databases, locks and catalogs."""

    name: str
    driver: str
    default_port: int
    maintenance_database: str
    reserved_databases: frozenset[str]
    max_identifier_length: int
    transactional_ddl: bool
    example_url: str  # what a connection URL looks like, for error messages

    def validate_database_name(self, name: str) -> str:
        """Return `name` if it is a safe database name, else raise an `InputError` saying why."""
        if not isinstance(name, str) or not name:
            raise InputError("The database name is empty", suggestions=["Give a name such as myapp_dev."])
        if len(name.encode()) > self.max_identifier_length:
            raise InputError(
                f"Database name {name[:80]!r} is longer than {self.max_identifier_length} bytes, "
                f"the {self.name} limit",
                suggestions=["Choose a shorter database name."],
            )
        if not _NAME.fullmatch(name):
            raise InputError(
                f"Invalid database name {name[:80]!r}: use lowercase letters, digits and "
                "underscores, starting with a letter or underscore",
                code=ErrorCode.INVALID_DATABASE_NAME,
                suggestions=["For example myapp_dev; the default is <project>_<environment>."],
            )
        if name in self.reserved_databases:
            raise InputError(
                f"Database name {name!r} is reserved by {self.name}",
                code=ErrorCode.INVALID_DATABASE_NAME,
                suggestions=["Choose a name of your own, such as myapp_dev."],
            )
        return name

    def normalize_url(self, url: URL) -> URL:
        """The URL with this provider's driver, ready for SQLAlchemy."""
        return url.set(drivername=f"{self.name}+{self.driver}")

    @staticmethod
    def lock_key(database: str) -> int:
        """A stable 31-bit key for the initialization lock of one database."""
        return zlib.crc32(f"dbinit:{database}".encode()) & 0x7FFFFFFF

    @abstractmethod
    def quote(self, identifier: str) -> str:
        """The identifier quoted for this dialect (validated first by the caller)."""

    @abstractmethod
    def database_exists(self, conn: Connection, name: str) -> bool: ...

    @abstractmethod
    def create_database(self, conn: Connection, name: str, *, collation: str | None = None) -> None: ...

    @abstractmethod
    def drop_database(self, conn: Connection, name: str) -> None: ...

    @abstractmethod
    def lock_in_transaction(self, conn: Connection, database: str, timeout_s: float) -> None:
        """Take the schema lock for `database` until the current transaction ends."""

    @abstractmethod
    def session_lock(self, conn: Connection, database: str, timeout_s: float) -> AbstractContextManager[None]:
        """Hold the initialization lock for `database` on this connection's session until exit."""

    # The database the run lock's connection goes to, whatever maintenance database the URL
    # names, so that the lock's scope is the whole server (None: the maintenance database).
    lock_database: str | None = None

    @abstractmethod
    def set_statement_timeout(self, conn: Connection, seconds: float | None) -> None:
        """Bound every later statement of this session to `seconds` (None: no bound); leaves no
        transaction open."""

    @abstractmethod
    def end_orphaned_locks(self, conn: Connection, database: str) -> list[int]:
        """Under the run lock of `database`: end the server sessions still holding its schema
        lock for a client that died mid-statement; returns their ids."""

    @abstractmethod
    def lock_capacity(self, conn: Connection) -> LockCapacity: ...

    # -- health: each returns {"status": ..., ...}; "unknown" always carries a "reason" ------
    def connection_check(self, conn: Connection) -> dict[str, Any]:
        """Connections in use against the server's limit."""
        return {"status": "unknown", "reason": f"unavailable on {self.name}: no connection count query"}

    def disk_check(self, conn: Connection) -> dict[str, Any]:
        """Free space where the server keeps its data, when it can be known from here."""
        return {
            "status": "unknown",
            "reason": f"unavailable on {self.name}: the server reports no disk space",
        }

    def permission_check(self, conn: Connection) -> dict[str, Any]:
        """Can the connecting role create tables? Probed, then undone (rolled back where DDL is
        transactional, dropped where it is not)."""
        probe = f"dbinit_probe_{secrets.token_hex(4)}"
        quoted = self.quote(probe)
        if conn.in_transaction():
            conn.rollback()
        try:
            with conn.begin() as tx:
                conn.execute(text(f"CREATE TABLE {quoted} (id INTEGER)"))
                if not self.transactional_ddl:
                    conn.execute(text(f"DROP TABLE {quoted}"))
                tx.rollback()
        except Exception as exc:
            from dbinit_pipeline.errors import describe

            return {"status": "unhealthy", "can_create_tables": False, "reason": describe(exc)}
        return {"status": "healthy", "can_create_tables": True}

    @abstractmethod
    def catalog(self, conn: Connection) -> Catalog:
        """Tables and foreign keys of the connected database's default schema."""

    # -- template databases (see templates.py); only providers that can copy a database -------
    templates_supported = False
    templates_unavailable = "this server cannot create a database as a copy of another"

    def list_templates(self, conn: Connection, prefix: str) -> list[DatabaseTemplate]:
        """The databases named `prefix*`, with their template flags and comment."""
        return []

    def clone_database(self, conn: Connection, name: str, template: str) -> None:
        """Create `name` as a copy of the template database `template` (autocommit connection)."""
        raise UnsupportedError(f"templates are not available on {self.name}: {self.templates_unavailable}")

    def copy_to_template(self, conn: Connection, name: str, source: str, comment: str) -> None:
        """Copy `source` into a new template database `name` carrying `comment`, then mark it a
        template that refuses connections."""
        raise UnsupportedError(f"templates are not available on {self.name}: {self.templates_unavailable}")

    def drop_template(self, conn: Connection, name: str) -> None:
        raise UnsupportedError(f"templates are not available on {self.name}: {self.templates_unavailable}")

    def try_template_lock(self, conn: Connection, name: str, *, shared: bool) -> bool:
        """Take the session lock of template `name` (shared: cloning; exclusive: building or
        dropping) if it is free now; False when it is not."""
        return False

    def template_unlock(self, conn: Connection, name: str, *, shared: bool) -> None:
        """Release what `try_template_lock` took."""
        return None


@dataclass(frozen=True)
class DatabaseTemplate:
    """A database that may be a template: its name, flags and comment as the server has them."""

    name: str
    is_template: bool
    allows_connections: bool
    comment: str | None


@dataclass(frozen=True)
class Catalog:
    """The live schema, read in a few bulk queries."""

    tables: frozenset[str]
    foreign_keys: frozenset[tuple[str, str]]  # (table, referred table)
