"""One taxonomy of errors: each says what is wrong, whether a retry can help, and what to do."""

from __future__ import annotations

import re
from collections.abc import Sequence
from enum import StrEnum
from typing import Any

from dbinit_pipeline.redaction import redact


class ErrorCode(StrEnum):
    """Every code an error can carry: the `code` of the error responses, stable across versions.

    A StrEnum, so a response document holds the plain string and a caller may compare either way."""

    ADOPTION_NEEDED = "adoption_needed"
    ADOPT_BAD_ARGUMENTS = "adopt_bad_arguments"
    ADOPT_CHANGED = "adopt_changed"
    ADOPT_DRIFT = "adopt_drift"
    ADOPT_MULTIPLE_HEADS = "adopt_multiple_heads"
    ADOPT_NOTHING = "adopt_nothing"
    ADOPT_POSITION_CONFLICT = "adopt_position_conflict"
    ADOPT_UNKNOWN_PACKAGE = "adopt_unknown_package"
    ADOPT_UNKNOWN_REVISION = "adopt_unknown_revision"
    ADOPT_VERSION_TABLE_MISMATCH = "adopt_version_table_mismatch"
    APPLIED_MIGRATION_MISSING = "applied_migration_missing"
    APPROVAL_EXPIRED = "approval_expired"
    APPROVAL_MISSING = "approval_missing"
    APPROVAL_NOT_REQUIRED = "approval_not_required"
    APPROVAL_REQUIRED = "approval_required"
    APPROVAL_USED = "approval_used"
    APPROVER_UNKNOWN = "approver_unknown"
    AUTHENTICATION_FAILED = "authentication_failed"
    AWS_ACCESS_DENIED = "aws_access_denied"
    AWS_CREDENTIALS_INVALID = "aws_credentials_invalid"
    AWS_CREDENTIALS_MISSING = "aws_credentials_missing"
    AWS_ERROR = "aws_error"
    AWS_INSUFFICIENT_CAPACITY = "aws_insufficient_capacity"
    AWS_INVALID_REQUEST = "aws_invalid_request"
    AWS_QUOTA_EXCEEDED = "aws_quota_exceeded"
    AWS_SECRET_MALFORMED = "aws_secret_malformed"
    AWS_SECRET_MISSING = "aws_secret_missing"
    AWS_THROTTLED = "aws_throttled"
    AWS_UNAVAILABLE = "aws_unavailable"
    AWS_UNREACHABLE = "aws_unreachable"
    AZURE_ACCESS_DENIED = "azure_access_denied"
    AZURE_CREDENTIALS_INVALID = "azure_credentials_invalid"
    AZURE_CREDENTIALS_MISSING = "azure_credentials_missing"
    AZURE_ERROR = "azure_error"
    AZURE_INVALID_REQUEST = "azure_invalid_request"
    AZURE_QUOTA_EXCEEDED = "azure_quota_exceeded"
    AZURE_THROTTLED = "azure_throttled"
    AZURE_UNAVAILABLE = "azure_unavailable"
    AZURE_UNREACHABLE = "azure_unreachable"
    BROKEN_REVISION_CHAIN = "broken_revision_chain"
    CANCELLED = "cancelled"
    CHECKSUM_MISMATCH = "checksum_mismatch"
    CLOUD_SECRET_MALFORMED = "cloud_secret_malformed"
    CLOUD_SECRET_MISSING = "cloud_secret_missing"
    CONFIGURATION_ERROR = "configuration_error"
    CONFIGURATION_MISSING = "configuration_missing"
    CONNECTION_FAILED = "connection_failed"
    DATABASE_ERROR = "database_error"
    DATABASE_EXISTS = "database_exists"
    DATABASE_MISSING = "database_missing"
    DATABASE_PROTECTED = "database_protected"
    DBINIT_ERROR = "dbinit_error"
    ENDPOINT_MISSING = "endpoint_missing"
    ENV_PY_OWN_CONNECTION = "env_py_own_connection"
    GCP_ACCESS_DENIED = "gcp_access_denied"
    GCP_CREDENTIALS_INVALID = "gcp_credentials_invalid"
    GCP_CREDENTIALS_MISSING = "gcp_credentials_missing"
    GCP_ERROR = "gcp_error"
    GCP_INVALID_REQUEST = "gcp_invalid_request"
    GCP_OPERATION_FAILED = "gcp_operation_failed"
    GCP_QUOTA_EXCEEDED = "gcp_quota_exceeded"
    GCP_THROTTLED = "gcp_throttled"
    GCP_UNAVAILABLE = "gcp_unavailable"
    GCP_UNREACHABLE = "gcp_unreachable"
    HISTORY_GAP = "history_gap"
    INFRASTRUCTURE_ENGINE_MISMATCH = "infrastructure_engine_mismatch"
    INFRASTRUCTURE_OWNED_ELSEWHERE = "infrastructure_owned_elsewhere"
    INFRASTRUCTURE_UNUSABLE = "infrastructure_unusable"
    INFRASTRUCTURE_VANISHED = "infrastructure_vanished"
    INTERNAL_ERROR = "internal_error"
    INVALID_COLLATION = "invalid_collation"
    INVALID_CONNECTION_URL = "invalid_connection_url"
    INVALID_DATABASE_NAME = "invalid_database_name"
    INVALID_DURATION = "invalid_duration"
    INVALID_INPUT = "invalid_input"
    INVALID_NAME = "invalid_name"
    INVALID_REASON = "invalid_reason"
    INVALID_SECRET_SOURCE = "invalid_secret_source"
    INVALID_STATE_URL = "invalid_state_url"
    INVALID_TENANT = "invalid_tenant"
    LOCK_TABLE_FULL = "lock_table_full"
    LOCK_TIMEOUT = "lock_timeout"
    LOCK_UNAVAILABLE = "lock_unavailable"
    LOCK_WAIT = "lock_wait"
    MIGRATION_DIRTY = "migration_dirty"
    MIGRATION_FAILED = "migration_failed"
    MISSING_CONNECTION_VARIABLE = "missing_connection_variable"
    MISSING_EXTRA = "missing_extra"
    MULTIPLE_HEADS = "multiple_heads"
    NOT_DIRTY = "not_dirty"
    NOT_INITIALIZED = "not_initialized"
    NO_APPROVERS = "no_approvers"
    PACKAGE_INVALID = "package_invalid"
    PERMISSION_DENIED = "permission_denied"
    PLAN_CHANGED = "plan_changed"
    PROVISIONING_FAILED = "provisioning_failed"
    PROVISIONING_TIMEOUT = "provisioning_timeout"
    RECREATE_REFUSED = "recreate_refused"
    SCHEDULE_REFUSED = "schedule_refused"
    SCHEMA_DRIFT = "schema_drift"
    SELF_APPROVAL = "self_approval"
    STATEMENT_TIMEOUT = "statement_timeout"
    STATE_STORE_FAILED = "state_store_failed"
    UNHEALTHY = "unhealthy"
    UNKNOWN_ENVIRONMENT = "unknown_environment"
    UNSUPPORTED = "unsupported"
    VERIFICATION_FAILED = "verification_failed"
    VERSION_TABLE_DISAGREES = "version_table_disagrees"


class DbinitError(Exception):
    """Base of every error the pipeline reports to a user."""

    code: ErrorCode = ErrorCode.DBINIT_ERROR
    transient = False
    # The error document the `dbinit` command prints for it, set by the public API (api.py).
    response: dict[str, Any] | None = None

    def __init__(
        self,
        message: str,
        *,
        suggestions: Sequence[str] = (),
        code: ErrorCode | None = None,
        transient: bool | None = None,
        details: dict[str, Any] | None = None,
        response: dict[str, Any] | None = None,
    ) -> None:
        self.message = redact(message)
        super().__init__(self.message)
        self.suggestions = [redact(s) for s in suggestions]
        if code is not None:
            self.code = code
        if transient is not None:
            self.transient = transient
        self.details: dict[str, Any] = details or {}
        if response is not None:
            self.response = response


class ConfigurationError(DbinitError):
    """The configuration file or the environment it names is wrong."""

    code = ErrorCode.CONFIGURATION_ERROR


class InputError(DbinitError):
    """A parameter given to the run (database name, policy, environment) is invalid."""

    code = ErrorCode.INVALID_INPUT


class ApprovalError(DbinitError):
    """A protected environment has no valid approval for this plan."""

    code = ErrorCode.APPROVAL_REQUIRED


# The codes with which the approve stage refuses a run that an approval would let through: the
# failure sensor turns exactly these into approval requests.
APPROVAL_REFUSALS = frozenset(
    {ErrorCode.APPROVAL_MISSING, ErrorCode.APPROVAL_EXPIRED, ErrorCode.APPROVAL_USED, ErrorCode.PLAN_CHANGED}
)


class UnsupportedError(DbinitError):
    """The configuration asks for something this version cannot do."""

    code = ErrorCode.UNSUPPORTED


class ProvisioningError(DbinitError):
    """Infrastructure could not be found, created or reached."""

    code = ErrorCode.PROVISIONING_FAILED


class ConnectionFailure(DbinitError):
    """The server did not answer (refused, starting, timed out): worth retrying."""

    code = ErrorCode.CONNECTION_FAILED
    transient = True


class AuthenticationFailure(DbinitError):
    """The server answered and refused the credentials: retrying cannot help."""

    code = ErrorCode.AUTHENTICATION_FAILED


class PermissionDenied(DbinitError):
    """The connecting role lacks a privilege the stage needs."""

    code = ErrorCode.PERMISSION_DENIED


class DatabaseExists(DbinitError):
    """The target database exists and the policy is `error`."""

    code = ErrorCode.DATABASE_EXISTS


class PackageError(DbinitError):
    """A package schema is malformed, or the set of packages is inconsistent."""

    code = ErrorCode.PACKAGE_INVALID


class ChecksumMismatch(DbinitError):
    """An applied migration's file changed after it was applied."""

    code = ErrorCode.CHECKSUM_MISMATCH


class MigrationError(DbinitError):
    """A migration failed on the server; the message names the package, file and statement."""

    code = ErrorCode.MIGRATION_FAILED


class LockTimeout(DbinitError):
    """Another initialization holds the lock on this database."""

    code = ErrorCode.LOCK_TIMEOUT


class StateStoreError(DbinitError):
    """The state store (approvals, lock holders, operation log copy) cannot be read or written."""

    code = ErrorCode.STATE_STORE_FAILED


class VerificationError(DbinitError):
    """The live database does not match what the schemas declare, or is unhealthy."""

    code = ErrorCode.VERIFICATION_FAILED


class DatabaseFault(DbinitError):
    """Any other error reported by the database server."""

    code = ErrorCode.DATABASE_ERROR


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
            code=ErrorCode.STATEMENT_TIMEOUT,
            suggestions=[
                "Find the slow statement (the error names it) and make it faster, or raise "
                "safety.statement_timeout in dbinit.yaml (seconds; 0 turns the bound off).",
            ],
        )
    if state == "57014":
        return DatabaseFault(
            f"The server cancelled the statement{where}: {text}",
            code=ErrorCode.CANCELLED,
            suggestions=["Someone cancelled it (pg_cancel_backend, or a stopped run); rerun when ready."],
        )
    lock_conflict = _MYSQL_LOCK_WAIT.get(state or "") or _PG_LOCK_CONFLICT.get(state or "")
    if lock_conflict:
        return DatabaseFault(
            f"{lock_conflict.capitalize()}{where}: {text}",
            code=ErrorCode.LOCK_WAIT,
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
            code=ErrorCode.DATABASE_MISSING,
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
            code=ErrorCode.LOCK_TABLE_FULL,
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
        code=ErrorCode.INTERNAL_ERROR,
        suggestions=["This is likely a bug in dbinit_pipeline: rerun with --verbose and report it."],
    )
