"""What a database provider must answer, independent of the dialect."""

from __future__ import annotations

import re
import secrets
import zlib
from abc import ABC, abstractmethod
from collections.abc import Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import Connection, Table, text
from sqlalchemy.engine import URL, Dialect

from dbinit_pipeline.database.catalog import ColumnShape, TableShape, describe_model, reflect_live
from dbinit_pipeline.errors import ErrorCode, InputError, UnsupportedError, describe

_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")


@dataclass(frozen=True)
class LockCapacity:
    """How many object locks one transaction may take on this server (None: no such limit)."""

    slots: int | None
    per_transaction: int | None


# Why a template operation failed, where the template (or the database being copied) is the cause.
TemplateFailure = Literal["busy", "missing"]


class Provider(ABC):
    """One SQL dialect: identifiers, databases, locks and catalogs.

    Every difference between the servers dbinit supports lives behind these methods and
    attributes; code outside `database/providers/` asks the provider and never looks at the
    dialect's name or at a driver's error codes. Each method's docstring states its contract,
    and `dbinit_pipeline_tests/test_provider_conformance.py` checks every provider against it on
    every server the machine offers.
    """

    name: str
    # The URL schemes (SQLAlchemy backend names) a connection URL for this provider may use.
    url_schemes: tuple[str, ...]
    driver: str  # the SQLAlchemy driver every connection uses
    default_port: int
    # A database that every account may connect to and that always exists: connections that
    # create, drop or lock databases go there.
    maintenance_database: str
    reserved_databases: frozenset[str]  # the server's own: never created, dropped or targeted
    max_identifier_length: int  # in bytes
    # True: DDL runs inside a transaction and rolls back with it (a migration is atomic);
    # False: each DDL statement commits at once, so progress is kept per migration.
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

    def connect_args(self) -> dict[str, object]:
        """Driver arguments for every connection dbinit opens (besides the connect timeout),
        such as the name its sessions show to the server."""
        return {}

    @staticmethod
    def lock_key(database: str) -> int:
        """A stable 31-bit key for the initialization lock of one database."""
        return zlib.crc32(f"dbinit:{database}".encode()) & 0x7FFFFFFF

    @abstractmethod
    def quote(self, identifier: str) -> str:
        """The identifier quoted for this dialect (validated first by the caller): a quote
        character inside it is doubled, so the quoted text names exactly `identifier`."""

    @abstractmethod
    def database_exists(self, conn: Connection, name: str) -> bool:
        """Whether database `name` exists on the server (any connection to it)."""

    @abstractmethod
    def create_database(self, conn: Connection, name: str, *, collation: str | None = None) -> None:
        """Create the empty database `name` (autocommit `conn`), after validating the name.

        When `name` exists already (another session created it after this one checked), raise
        either the driver's error, for which `is_duplicate_database` is true, or a transient
        `DatabaseExists`, so that the caller applies its if_exists policy."""

    def is_duplicate_database(self, exc: BaseException) -> bool:
        """Whether `exc`, raised by a CREATE DATABASE (`create_database`, `clone_database`), says
        that a database of that name exists already; false for every other failure."""
        return False

    @abstractmethod
    def drop_database(self, conn: Connection, name: str) -> None:
        """Drop database `name` if it exists (autocommit `conn`), even with sessions open on it
        where the server can end them; dropping a missing database is no error."""

    @abstractmethod
    def lock_in_transaction(self, conn: Connection, database: str, timeout_s: float) -> None:
        """Take the schema lock for `database` until the current transaction ends, waiting at most
        `timeout_s` for another holder (then `LockTimeout` naming it). A provider whose DDL is not
        transactional has no such lock and raises `UnsupportedError`."""

    @abstractmethod
    def session_lock(self, conn: Connection, database: str, timeout_s: float) -> AbstractContextManager[None]:
        """Hold the initialization lock for `database` on this connection's session until exit,
        waiting at most `timeout_s` for another session holding it (then `LockTimeout` naming
        the holder); no transaction is left open inside, and the lock is free after exit."""

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
    def lock_capacity(self, conn: Connection) -> LockCapacity:
        """How many object locks one transaction may take (None where the server has no limit)."""

    # -- health: each returns {"status": ..., ...}; "unknown" always carries a "reason" ------
    def connection_check(self, conn: Connection) -> dict[str, Any]:
        """Connections in use against the server's limit: `active` and `max_connections`."""
        return {"status": "unknown", "reason": f"unavailable on {self.name}: no connection count query"}

    def disk_check(self, conn: Connection) -> dict[str, Any]:
        """Free space where the server keeps its data, when it can be known from here: a status
        of healthy, degraded or unhealthy with `free_bytes` and `total_bytes`, or "unknown" with
        the reason it cannot be known."""
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
            return {"status": "unhealthy", "can_create_tables": False, "reason": describe(exc)}
        return {"status": "healthy", "can_create_tables": True}

    # -- the live schema ----------------------------------------------------------------
    def describe_live(self, conn: Connection, tables: Iterable[str] | None = None) -> dict[str, TableShape]:
        """Shapes of the tables of the connected database's default schema (all of them, or only
        `tables`; a name that is no table is absent), read in a few bulk queries.

        A table created from a SQLAlchemy `Table` (by a migration's `op` or by `create_all`) has
        exactly the shape `describe_model` gives for that table: `catalog.diff` of the two is
        empty exactly when the live table is as declared. Default: SQLAlchemy's bulk reflection."""
        return reflect_live(conn, tables)

    def describe_model(self, table: Table, dialect: Dialect) -> TableShape:
        """The shape a SQLAlchemy table declares, spelled as `describe_live` reads it back from
        this provider's server (`catalog.describe_model`, each type through `live_type`)."""
        shape = describe_model(table, dialect)
        columns = tuple(
            ColumnShape(c.name, self.live_type(c.type, dialect), c.nullable, c.default) for c in shape.columns
        )
        if columns == shape.columns:
            return shape
        return TableShape(
            shape.name, columns, shape.primary_key, shape.foreign_keys, shape.unique, shape.indexes
        )

    def live_type(self, declared: str, dialect: Dialect) -> str:
        """The spelling the server's catalog gives a column whose type the dialect compiles to
        `declared` (the server stores several spellings as one type); a live spelling is
        returned as it is."""
        return declared

    def table_digests(self, conn: Connection) -> dict[str, str] | None:
        """A digest of every table of the connected database's default schema, in one query, or
        None where the provider has none (verify then reads every table's shape).

        A table's digest changes whenever its shape as `describe_live` reads it changes, and
        only when something about the table changed: an equal digest lets verify skip reading
        the table again."""
        return None

    # -- template databases (see templates.py); only providers that can copy a database -------
    templates_supported = False
    templates_unavailable = "this server cannot create a database as a copy of another"

    def template_failure(self, exc: BaseException) -> TemplateFailure | None:
        """Why `exc`, raised by `clone_database`, `copy_to_template` or `drop_template`, failed when
        the database copied or dropped is the cause: "busy" (it has another session open) or
        "missing" (it no longer exists); None for any other failure."""
        return None

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

    def rename_database(self, conn: Connection, name: str, new_name: str) -> None:
        """Give database `name`, which nobody is connected to, the name `new_name`."""
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
