"""The run lock: one initialization per server and database at a time, whoever started it.

The create stage takes a session-level lock through the provider (a PostgreSQL advisory lock,
a MySQL GET_LOCK) on a connection of its own to the maintenance database, and keeps that
connection open in a per-process registry keyed by run id; verify releases it, and so does the
failure path and, as a last resort, the resource's teardown at the end of the run (the ops of a
run share one process: the jobs use the in-process executor). A process that dies closes its
connection and the server frees the lock, so a dead holder never blocks anyone; the holder's
record in the state store (run id, host, pid, started) only names it.

The lock is server-wide: the provider names the database its connection goes to
(`postgres` on PostgreSQL, whose advisory locks are per database), whatever maintenance database
the URL names. The lock name is `run:<database>`: distinct from the name the migration runner locks inside
the target database, so that the run's own schema transactions never wait for the run lock.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from contextlib import ExitStack
from dataclasses import dataclass

from sqlalchemy import Connection

from dbinit_pipeline.configuration import LoadedConfig
from dbinit_pipeline.database.server import DatabaseServer, ServerRef
from dbinit_pipeline.errors import DbinitError, ErrorCode, LockTimeout, classify, describe
from dbinit_pipeline.pipeline.plan_hash import server_identity
from dbinit_pipeline.pipeline.results import InitPlan, Provisioned
from dbinit_pipeline.safety.state_store import LockHolder, StateStore, utcnow

logger = logging.getLogger(__name__)


def lock_name(database: str) -> str:
    return f"run:{database}"


def lock_id(server: ServerRef, database: str) -> str:
    """How the state store names the lock of one database on one server."""
    return f"{server_identity(server)}/{database}"


@dataclass
class HeldLock:
    """A lock this process holds for one run."""

    run_id: str
    lock_id: str
    holder: LockHolder
    store: StateStore
    stack: ExitStack  # closes the lock, then its connection


_held: dict[str, HeldLock] = {}
_registry = threading.Lock()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _timeout_error(
    exc: LockTimeout, store: StateStore, key: str, plan: InitPlan, waited: float
) -> LockTimeout:
    """The provider's timeout, with the holder named from the state store."""
    try:
        holder = store.lock_holder(key)
    except DbinitError:
        holder = None
    if holder is None:
        who = (
            "another run that this state store does not know (one with another DBINIT_STATE_URL, "
            "or an older dbinit)"
        )
    else:
        who = holder.describe()
        if holder.host == socket.gethostname() and not _pid_alive(holder.pid):
            who += " (that process has exited; the server still reports the lock as held)"
    return LockTimeout(
        f"Database {plan.database_name!r} is being initialized by {who}; waited "
        f"{waited:.0f} s (safety.lock_timeout). Server side: {exc.message}",
        suggestions=[
            "Wait for that run to finish (see the Dagster UI or the operation log), then rerun.",
            "Raise safety.lock_timeout in dbinit.yaml to wait longer.",
            "A holder whose process died frees the lock by itself when its connection closes.",
        ],
        details={"holder": holder.as_dict() if holder else None},
    )


def _lock_connection(database: DatabaseServer) -> Connection:
    """A connection to the database where the server-wide run lock lives (see the providers)."""
    where = database.provider.lock_database
    try:
        return database.engine(where).connect()
    except Exception as exc:
        error = classify(exc, during=f"connecting for the run lock to {where or 'the maintenance database'}")
        if where is None or error.code != ErrorCode.DATABASE_MISSING:
            raise error from None
        raise DbinitError(
            f"The run lock lives in the database {where!r} of the server, which does not exist",
            code=ErrorCode.LOCK_UNAVAILABLE,
            suggestions=[
                f"Create it (CREATE DATABASE {where}): every run takes its lock there, so that runs "
                "whose URLs name different maintenance databases still exclude each other.",
            ],
        ) from None


def acquire_run_lock(config: LoadedConfig, server: ServerRef, plan: InitPlan, run_id: str) -> LockHolder:
    """Take the run lock of `plan`'s database (waiting up to safety.lock_timeout) and record it.

    Idempotent per run: a retried create stage finds the lock it already holds.
    """
    with _registry:
        held = _held.get(run_id)
    if held is not None:
        return held.holder
    timeout = config.model.safety.lock_timeout
    store = StateStore.for_config(config)
    key = lock_id(server, plan.database_name)
    database = DatabaseServer(server)
    stack = ExitStack()
    try:
        conn = stack.enter_context(_lock_connection(database))
        try:
            stack.enter_context(database.provider.session_lock(conn, lock_name(plan.database_name), timeout))
        except LockTimeout as exc:
            raise _timeout_error(exc, store, key, plan, timeout) from None
        try:
            ended = database.provider.end_orphaned_locks(conn, plan.database_name)
        except Exception as exc:  # no privilege to end them: the schema lock's own wait applies
            logger.warning("could not end orphaned schema locks: %s", describe(exc))
            if conn.in_transaction():
                conn.rollback()
        else:
            if ended:
                logger.warning("ended server processes %s left by a dead run", ended)
        holder = LockHolder(
            lock_id=key,
            run_id=run_id,
            environment=plan.environment,
            database_name=plan.database_name,
            server=server_identity(server),
            host=socket.gethostname(),
            pid=os.getpid(),
            started_at=utcnow(),
        )
        store.set_lock_holder(holder)
    except BaseException:
        stack.close()
        raise
    with _registry:
        _held[run_id] = HeldLock(run_id, key, holder, store, stack)
    return holder


def take_run_lock(config: LoadedConfig, provisioned: Provisioned, *, run_id: str) -> LockHolder | None:
    """The run lock of a real run (a dry run changes nothing and takes none); idempotent per run."""
    if provisioned.plan.dry_run or provisioned.infrastructure == "would_provision":
        return None
    return acquire_run_lock(config, provisioned.server, provisioned.plan, run_id)


def release_run_lock(run_id: str) -> bool:
    """Release the run lock `run_id` holds in this process; False when it holds none. Never raises."""
    with _registry:
        held = _held.pop(run_id, None)
    if held is None:
        return False
    try:
        held.stack.close()
    except Exception as exc:  # the connection died: the server has freed the lock already
        logger.warning("releasing the run lock: %s", describe(exc))
    try:
        held.store.clear_lock_holder(held.lock_id, run_id)
    except DbinitError as exc:
        logger.warning("%s", exc.message)
    return True


def holds_run_lock(run_id: str) -> bool:
    with _registry:
        return run_id in _held
