"""One taxonomy of errors: each says what is wrong, whether a retry can help, and what to do."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from dbinit_pipeline.redaction import redact


class DbinitError(Exception):
    """Base of every error the pipeline reports to a user."""

    code = "dbinit_error"
    transient = False

    def __init__(
        self,
        message: str,
        *,
        suggestions: Sequence[str] = (),
        code: str | None = None,
        transient: bool | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        self.message = redact(message)
        super().__init__(self.message)
        self.suggestions = [redact(s) for s in suggestions]
        if code is not None:
            self.code = code
        if transient is not None:
            self.transient = transient
        self.details: dict[str, Any] = details or {}


class ConfigurationError(DbinitError):
    """The configuration file or the environment it names is wrong."""

    code = "configuration_error"


class InputError(DbinitError):
    """A parameter given to the run (database name, policy, environment) is invalid."""

    code = "invalid_input"


class ApprovalError(DbinitError):
    """A protected environment has no valid approval for this plan."""

    code = "approval_required"


# The codes with which the approve stage refuses a run that an approval would let through: the
# failure sensor turns exactly these into approval requests.
APPROVAL_REFUSALS = frozenset({"approval_missing", "approval_expired", "approval_used", "plan_changed"})


class UnsupportedError(DbinitError):
    """The configuration asks for something this version cannot do."""

    code = "unsupported"


class ProvisioningError(DbinitError):
    """Infrastructure could not be found, created or reached."""

    code = "provisioning_failed"


class ConnectionFailure(DbinitError):
    """The server did not answer (refused, starting, timed out): worth retrying."""

    code = "connection_failed"
    transient = True


class AuthenticationFailure(DbinitError):
    """The server answered and refused the credentials: retrying cannot help."""

    code = "authentication_failed"


class PermissionDenied(DbinitError):
    """The connecting role lacks a privilege the stage needs."""

    code = "permission_denied"


class DatabaseExists(DbinitError):
    """The target database exists and the policy is `error`."""

    code = "database_exists"


class PackageError(DbinitError):
    """A package schema is malformed, or the set of packages is inconsistent."""

    code = "package_invalid"


class ChecksumMismatch(DbinitError):
    """An applied migration's file changed after it was applied."""

    code = "checksum_mismatch"


class MigrationError(DbinitError):
    """A migration failed on the server; the message names the package, file and statement."""

    code = "migration_failed"


class LockTimeout(DbinitError):
    """Another initialization holds the lock on this database."""

    code = "lock_timeout"


class StateStoreError(DbinitError):
    """The state store (approvals, lock holders, operation log copy) cannot be read or written."""

    code = "state_store_failed"


class VerificationError(DbinitError):
    """The live database does not match what the schemas declare, or is unhealthy."""

    code = "verification_failed"


class DatabaseFault(DbinitError):
    """Any other error reported by the database server."""

    code = "database_error"


# Lock conflicts the server resolved by giving up on this transaction: a retry usually succeeds.
_PG_LOCK_CONFLICT = {
    "40001": "the server could not serialize this transaction with a concurrent one",
    "40P01": "the server broke a deadlock by rolling this transaction back",
    "55P03": "a lock this statement needs is held by another session (lock_timeout)",
}
_TRANSIENT_SQLSTATES = {
    "57P03": "the database system is starting up",
    "08000": "connection exception",
    "08001": "unable to connect",
    "08006": "connection failure",
}
# "database "x" does not exist" (PostgreSQL, also at connect time, where there is no SQLSTATE)
# and "Unknown database 'x'" (MySQL, MariaDB).
_MISSING_DATABASE = re.compile(r'database "([^"]+)" does not exist|Unknown database \'([^\']+)\'')
_TRANSIENT_TEXT = (
    "connection refused",
    "could not connect",
    "timeout expired",
    "timed out",
    "the database system is starting up",
    "the database system is shutting down",
    "the database system is in recovery mode",
    "server closed the connection unexpectedly",
    "connection reset",
    "can't connect to mysql server",
    "lost connection to mysql server",
    "no route to host",
)
_AUTH_TEXT = (
    "password authentication failed",
    "no password supplied",
    "authentication failed",
    "access denied for user",
    "pg_hba.conf",
)


# MySQL/MariaDB error numbers: 1044 "access denied for user ... to database" is a missing
# privilege, not bad credentials, though its text reads like the latter.
_MYSQL_PERMISSION = {"mysql:1044", "mysql:1142", "mysql:1143", "mysql:1227", "mysql:1370"}
_MYSQL_LOCK_WAIT = {
    "mysql:1205": "the server gave up waiting for a lock held by another session",
    "mysql:1213": "the server broke a deadlock by rolling this transaction back",
    "mysql:3572": "a row this statement needs is locked (NOWAIT)",
}


def _sqlstate(exc: BaseException) -> str | None:
    orig = getattr(exc, "orig", None) or exc
    # MySQL's error number, not its SQLSTATE (which PyMySQL sets too): the numbers tell apart what
    # one SQLSTATE lumps together (HY000 is a lock wait timeout and a hundred other things).
    # Only the MySQL drivers put it first in args (OSError puts errno there).
    args = getattr(orig, "args", ())
    if type(orig).__module__.startswith(("pymysql", "MySQLdb")) and args and isinstance(args[0], int):
        return f"mysql:{args[0]}"
    state = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    return str(state) if state else None


def describe(exc: BaseException) -> str:
    """A one-line, password-free description of a driver or Python exception."""
    orig = getattr(exc, "orig", None)
    base = orig if orig is not None else exc
    text = str(base).strip().splitlines()
    first = text[0] if text else type(base).__name__
    return redact(first)


def classify(exc: BaseException, *, during: str = "") -> DbinitError:
    """Turn any exception into a `DbinitError`, deciding whether a retry can help."""
    if isinstance(exc, DbinitError):
        return exc
    where = f" while {during}" if during else ""
    text = describe(exc)
    lowered = text.lower()
    state = _sqlstate(exc)
    if state in _MYSQL_PERMISSION:
        return PermissionDenied(
            f"Permission denied{where}: {text}",
            suggestions=[
                "Grant the connecting account the privilege named above (GRANT ... ON db.* TO user), "
                "or connect as an account that has it."
            ],
        )
    if (state == "57014" and "statement timeout" in lowered) or state in {"mysql:1969", "mysql:3024"}:
        return DatabaseFault(
            f"A statement ran longer than safety.statement_timeout and the server cancelled it{where}: {text}",
            code="statement_timeout",
            suggestions=[
                "Find the slow statement (the error names it) and make it faster, or raise "
                "safety.statement_timeout in dbinit.yaml (seconds; 0 turns the bound off).",
            ],
        )
    if state == "57014":
        return DatabaseFault(
            f"The server cancelled the statement{where}: {text}",
            code="cancelled",
            suggestions=["Someone cancelled it (pg_cancel_backend, or a stopped run); rerun when ready."],
        )
    lock_conflict = _MYSQL_LOCK_WAIT.get(state or "") or _PG_LOCK_CONFLICT.get(state or "")
    if lock_conflict:
        return DatabaseFault(
            f"{lock_conflict.capitalize()}{where}: {text}",
            code="lock_wait",
            transient=True,
            suggestions=["Another session holds locks on the same tables: retrying usually succeeds."],
        )
    if any(marker in lowered for marker in _AUTH_TEXT) or state in {"28P01", "28000", "mysql:1045"}:
        return AuthenticationFailure(
            f"The server refused the credentials{where}: {text}",
            suggestions=[
                "Check the user and password in the connection variable.",
                "The password is never printed: compare it with your secret store.",
            ],
        )
    missing = _MISSING_DATABASE.search(text)
    if state in {"3D000", "mysql:1049"} or missing:
        name = next((g for g in missing.groups() if g), None) if missing else None
        which = f"The database {name}" if name else "The target database"
        return DatabaseFault(
            f"{which} does not exist{where}: {text}",
            code="database_missing",
            suggestions=[
                "If a failed run created it and its cleanup dropped it (the response said "
                "'dropped'), launch a new run: re-executing from failure reuses the create stage's "
                "output and does not create it again.",
                "Otherwise check database_name (or --database-name) and that the connection "
                "variable points at the server you meant.",
            ],
        )
    if state == "42501" or "permission denied" in lowered:
        return PermissionDenied(
            f"Permission denied{where}: {text}",
            suggestions=[
                "Grant the connecting role the privilege named above, or connect as a role that has it."
            ],
        )
    if "out of shared memory" in lowered or state == "53200":
        return DatabaseFault(
            f"PostgreSQL's lock table is full{where}: {text}",
            code="lock_table_full",
            suggestions=[
                "Raise max_locks_per_transaction on the server (it needs a restart).",
                "Or set packages.transaction: per_package in dbinit.yaml to commit per package.",
            ],
        )
    if (
        state in _TRANSIENT_SQLSTATES
        or any(marker in lowered for marker in _TRANSIENT_TEXT)
        or state
        in {
            "mysql:2003",
            "mysql:2013",
            "mysql:2006",
            "mysql:1040",
        }
    ):
        return ConnectionFailure(
            f"The database server did not answer{where}: {text}",
            suggestions=[
                "Check that the server is running and reachable from this machine.",
                "Check host and port in the connection variable.",
            ],
        )
    if isinstance(exc, TimeoutError):
        return ConnectionFailure(f"Timed out{where}: {text}")
    module = type(getattr(exc, "orig", None) or exc).__module__
    if module.startswith(("psycopg", "pymysql", "sqlalchemy", "MySQLdb")):
        return DatabaseFault(
            f"The database reported an error{where}: {text}",
            suggestions=[
                "Read the error above; fix the cause on the server or in the migration, then rerun."
            ],
        )
    return DbinitError(
        f"Unexpected {type(exc).__name__}{where}: {text}",
        code="internal_error",
        suggestions=["This is likely a bug in dbinit_pipeline: rerun with --verbose and report it."],
    )
