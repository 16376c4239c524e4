"""The state store: approvals, approval requests, lock holders and a copy of the operation log.

One small database reached through SQLAlchemy: by default the SQLite file `.dbinit/state.db`
beside dbinit.yaml; when `DBINIT_STATE_URL` is set, the database it names (PostgreSQL when
several machines share the work). The tables are created on first use. Every string written
is redacted first, and times are stored as naive UTC so that SQLite and PostgreSQL agree.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy import Connection, Engine
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.pool import NullPool
from sqlalchemy.schema import CreateIndex, CreateTable

from dbinit_pipeline.clock import stamp
from dbinit_pipeline.database.engines import shared_engine
from dbinit_pipeline.errors import ConfigurationError, ErrorCode, StateStoreError, describe
from dbinit_pipeline.redaction import redact, redact_data, register_secret

if TYPE_CHECKING:
    from dbinit_pipeline.configuration import LoadedConfig

STATE_URL_VAR = "DBINIT_STATE_URL"
STATE_FILE = "state.db"

metadata = sa.MetaData()

approval_requests = sa.Table(
    "dbinit_approval_requests",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("environment", sa.String(64), nullable=False),
    sa.Column("database_name", sa.String(128), nullable=False),
    sa.Column("plan_hash", sa.String(64), nullable=False),
    sa.Column("plan", sa.Text(), nullable=False),
    sa.Column("requested_by", sa.String(128), nullable=False),
    sa.Column("reason", sa.Text(), nullable=True),
    sa.Column("requested_at", sa.DateTime(), nullable=False),
    sa.Index("ix_dbinit_approval_requests_target", "environment", "database_name"),
)

approvals = sa.Table(
    "dbinit_approvals",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("environment", sa.String(64), nullable=False),
    sa.Column("database_name", sa.String(128), nullable=False),
    sa.Column("plan_hash", sa.String(64), nullable=False),
    sa.Column("plan", sa.Text(), nullable=False),
    sa.Column("approved_by", sa.String(128), nullable=False),
    sa.Column("requested_by", sa.String(128), nullable=True),
    sa.Column("reason", sa.Text(), nullable=True),
    sa.Column("approved_at", sa.DateTime(), nullable=False),
    sa.Column("expires_at", sa.DateTime(), nullable=False),
    sa.Column("used_at", sa.DateTime(), nullable=True),
    sa.Column("used_by_run", sa.String(64), nullable=True),
    sa.Index("ix_dbinit_approvals_target", "environment", "database_name"),
)

lock_holders = sa.Table(
    "dbinit_lock_holders",
    metadata,
    sa.Column("lock_id", sa.String(400), primary_key=True),
    sa.Column("run_id", sa.String(64), nullable=False),
    sa.Column("environment", sa.String(64), nullable=False),
    sa.Column("database_name", sa.String(128), nullable=False),
    sa.Column("server", sa.String(255), nullable=False),
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("pid", sa.Integer(), nullable=False),
    sa.Column("started_at", sa.DateTime(), nullable=False),
)

operations = sa.Table(
    "dbinit_operations",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("recorded_at", sa.DateTime(), nullable=False),
    sa.Column("run_id", sa.String(64), nullable=True),
    sa.Column("environment", sa.String(64), nullable=True),
    sa.Column("database_name", sa.String(128), nullable=True),
    sa.Column("status", sa.String(32), nullable=True),
    sa.Column("stage", sa.String(32), nullable=True),
    sa.Column("record", sa.Text(), nullable=False),
)


def utcnow() -> datetime:
    return datetime.now(UTC)


def _to_db(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.replace(tzinfo=None)


def _from_db(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _when(moment: datetime | None) -> datetime:
    value = _from_db(moment)
    assert value is not None
    return value


@dataclass(frozen=True)
class ApprovalRequest:
    """Someone asked for a plan to be approved."""

    id: str
    environment: str
    database_name: str
    plan_hash: str
    plan: dict[str, Any]
    requested_by: str
    reason: str | None
    requested_at: datetime


@dataclass(frozen=True)
class ApprovalRecord:
    """An approver approved one plan of one database, until it expires or one run uses it."""

    id: str
    environment: str
    database_name: str
    plan_hash: str
    plan: dict[str, Any]
    approved_by: str
    requested_by: str | None
    reason: str | None
    approved_at: datetime
    expires_at: datetime
    used_at: datetime | None = None
    used_by_run: str | None = None

    def expired(self, now: datetime) -> bool:
        return self.expires_at <= now


@dataclass(frozen=True)
class LockHolder:
    """Who holds the initialization lock of one database on one server."""

    lock_id: str
    run_id: str
    environment: str
    database_name: str
    server: str
    host: str
    pid: int
    started_at: datetime

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "environment": self.environment,
            "database_name": self.database_name,
            "server": self.server,
            "host": self.host,
            "pid": self.pid,
            "started_at": stamp(self.started_at),
        }

    def describe(self) -> str:
        return (
            f"run {self.run_id} (environment {self.environment!r}) on host {self.host}, pid {self.pid}, "
            f"since {stamp(self.started_at)}"
        )


_ready: set[str] = set()
_ready_lock = threading.Lock()


def _normalize(url: URL) -> URL:
    backend = url.get_backend_name()
    if url.drivername in ("postgresql", "postgres"):
        return url.set(drivername="postgresql+psycopg")
    if url.drivername == "mysql":
        return url.set(drivername="mysql+pymysql")
    if backend == "sqlite" and url.database and url.database != ":memory:":
        Path(url.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    return url


def state_url(config: LoadedConfig) -> URL:
    """$DBINIT_STATE_URL, else the SQLite file `.dbinit/state.db` beside the configuration."""
    raw = os.environ.get(STATE_URL_VAR, "").strip()
    if not raw:
        return URL.create("sqlite", database=str(config.state_dir / STATE_FILE))
    try:
        url = make_url(raw)
    except (ArgumentError, ValueError):
        raise ConfigurationError(
            f"{STATE_URL_VAR} does not hold a valid database URL",
            code=ErrorCode.INVALID_STATE_URL,
            suggestions=[
                f"Set {STATE_URL_VAR} to a URL like postgresql://user:password@host:5432/dbinit_state,",
                f"or unset it to use {config.state_dir / STATE_FILE}.",
            ],
        ) from None
    register_secret(url.password if isinstance(url.password, str) else None)
    return url


class StateStore:
    """Reads and writes the state tables; every failure is a `StateStoreError` naming the store."""

    def __init__(self, url: URL) -> None:
        self.url = _normalize(url)
        self.display = self.url.render_as_string(hide_password=True)

    @classmethod
    def for_config(cls, config: LoadedConfig) -> StateStore:
        return cls(state_url(config))

    # -- plumbing ----------------------------------------------------------------------
    def _engine(self) -> Engine:
        key = self.url.render_as_string(hide_password=False)
        engine = shared_engine(key, False, self._make_engine)
        with _ready_lock:
            if key not in _ready:
                self._create_tables(engine)
                _ready.add(key)
        return engine

    def _make_engine(self) -> Engine:
        if self.url.get_backend_name() == "sqlite":
            # Writers from several processes queue on SQLite's file lock for up to 30 s.
            return sa.create_engine(self.url, connect_args={"timeout": 30}, poolclass=NullPool)
        return sa.create_engine(
            self.url, poolclass=NullPool, hide_parameters=True, connect_args={"connect_timeout": 10}
        )

    def _create_tables(self, engine: Engine) -> None:
        for attempt in (1, 2):
            try:
                with engine.begin() as conn:
                    for table in metadata.sorted_tables:
                        conn.execute(CreateTable(table, if_not_exists=True))
                        for index in table.indexes:
                            conn.execute(CreateIndex(index, if_not_exists=True))
                return
            except SQLAlchemyError:
                # Two processes creating the tables at once: the loser retries and finds them.
                if attempt == 2:
                    raise

    @contextmanager
    def _begin(self, doing: str) -> Iterator[Connection]:
        try:
            with self._engine().begin() as conn:
                yield conn
        except SQLAlchemyError as exc:
            raise StateStoreError(
                f"The state store {self.display} failed while {doing}: {describe(exc)}",
                suggestions=[
                    f"Check that the state store answers ({STATE_URL_VAR} or .dbinit/{STATE_FILE}).",
                    "Approvals, lock holders and the operation log copy live there.",
                ],
            ) from None

    # -- approval requests -------------------------------------------------------------
    def add_request(self, request: ApprovalRequest) -> None:
        with self._begin("recording an approval request") as conn:
            conn.execute(
                approval_requests.insert().values(
                    id=request.id,
                    environment=request.environment,
                    database_name=request.database_name,
                    plan_hash=request.plan_hash,
                    plan=redact(json.dumps(request.plan, sort_keys=True)),
                    requested_by=redact(request.requested_by),
                    reason=redact(request.reason) if request.reason else None,
                    requested_at=_to_db(request.requested_at),
                )
            )

    def requests_for(self, environment: str, database_name: str) -> list[ApprovalRequest]:
        """Requests for one database of one environment, newest first."""
        t = approval_requests
        with self._begin("reading approval requests") as conn:
            rows = conn.execute(
                sa.select(t)
                .where(t.c.environment == environment, t.c.database_name == database_name)
                .order_by(t.c.requested_at.desc())
            ).all()
        return [
            ApprovalRequest(
                id=r.id,
                environment=r.environment,
                database_name=r.database_name,
                plan_hash=r.plan_hash,
                plan=json.loads(r.plan),
                requested_by=r.requested_by,
                reason=r.reason,
                requested_at=_when(r.requested_at),
            )
            for r in rows
        ]

    # -- approvals ---------------------------------------------------------------------
    def add_approval(self, record: ApprovalRecord) -> None:
        with self._begin("recording an approval") as conn:
            conn.execute(
                approvals.insert().values(
                    id=record.id,
                    environment=record.environment,
                    database_name=record.database_name,
                    plan_hash=record.plan_hash,
                    plan=redact(json.dumps(record.plan, sort_keys=True)),
                    approved_by=redact(record.approved_by),
                    requested_by=redact(record.requested_by) if record.requested_by else None,
                    reason=redact(record.reason) if record.reason else None,
                    approved_at=_to_db(record.approved_at),
                    expires_at=_to_db(record.expires_at),
                    used_at=_to_db(record.used_at),
                    used_by_run=record.used_by_run,
                )
            )

    def approvals_for(self, environment: str, database_name: str) -> list[ApprovalRecord]:
        """Approvals for one database of one environment, newest first."""
        t = approvals
        with self._begin("reading approvals") as conn:
            rows = conn.execute(
                sa.select(t)
                .where(t.c.environment == environment, t.c.database_name == database_name)
                .order_by(t.c.approved_at.desc())
            ).all()
        return [
            ApprovalRecord(
                id=r.id,
                environment=r.environment,
                database_name=r.database_name,
                plan_hash=r.plan_hash,
                plan=json.loads(r.plan),
                approved_by=r.approved_by,
                requested_by=r.requested_by,
                reason=r.reason,
                approved_at=_when(r.approved_at),
                expires_at=_when(r.expires_at),
                used_at=_from_db(r.used_at),
                used_by_run=r.used_by_run,
            )
            for r in rows
        ]

    def use_approval(self, approval_id: str, run_id: str, now: datetime) -> bool:
        """Mark an approval used by `run_id`; False when another run used it first (atomic)."""
        t = approvals
        with self._begin("recording the use of an approval") as conn:
            result = conn.execute(
                t.update()
                .where(t.c.id == approval_id, t.c.used_at.is_(None))
                .values(used_at=_to_db(now), used_by_run=run_id)
            )
            return result.rowcount == 1

    # -- lock holders ------------------------------------------------------------------
    def set_lock_holder(self, holder: LockHolder) -> None:
        """Record the holder of a lock, replacing whoever held it before (the server lock is the truth)."""
        t = lock_holders
        with self._begin("recording the lock holder") as conn:
            conn.execute(t.delete().where(t.c.lock_id == holder.lock_id))
            conn.execute(
                t.insert().values(
                    lock_id=holder.lock_id,
                    run_id=holder.run_id,
                    environment=holder.environment,
                    database_name=holder.database_name,
                    server=redact(holder.server),
                    host=holder.host,
                    pid=holder.pid,
                    started_at=_to_db(holder.started_at),
                )
            )

    def lock_holder(self, lock_id: str) -> LockHolder | None:
        found = self.lock_holders(lock_id)
        return found[0] if found else None

    def lock_holders(self, lock_id: str | None = None) -> list[LockHolder]:
        """The recorded holder of one lock, or of every lock held now."""
        t = lock_holders
        query = sa.select(t) if lock_id is None else sa.select(t).where(t.c.lock_id == lock_id)
        with self._begin("reading lock holders") as conn:
            rows = conn.execute(query.order_by(t.c.started_at)).all()
        return [
            LockHolder(
                lock_id=r.lock_id,
                run_id=r.run_id,
                environment=r.environment,
                database_name=r.database_name,
                server=r.server,
                host=r.host,
                pid=r.pid,
                started_at=_when(r.started_at),
            )
            for r in rows
        ]

    def clear_lock_holder(self, lock_id: str, run_id: str) -> None:
        """Forget the holder, if it is still `run_id` (a later holder's record stays)."""
        t = lock_holders
        with self._begin("clearing the lock holder") as conn:
            conn.execute(t.delete().where(t.c.lock_id == lock_id, t.c.run_id == run_id))

    # -- operation log -----------------------------------------------------------------
    def append_operation(self, record: dict[str, Any]) -> None:
        clean = redact_data(record)
        result = clean.get("result") if isinstance(clean.get("result"), dict) else {}
        with self._begin("appending to the operation log") as conn:
            conn.execute(
                operations.insert().values(
                    recorded_at=_to_db(utcnow()),
                    run_id=str(clean.get("run_id") or result.get("run_id") or "")[:64] or None,
                    environment=str(clean.get("environment") or result.get("environment") or "")[:64] or None,
                    database_name=str(clean.get("database_name") or result.get("database_name") or "")[:128]
                    or None,
                    status=str(clean.get("status", ""))[:32] or None,
                    stage=str(clean.get("stage", ""))[:32] or None,
                    record=redact(json.dumps(clean, sort_keys=True, default=str)),
                )
            )

    def operations(self, *, limit: int = 100) -> list[dict[str, Any]]:
        """The most recent operation records, oldest first."""
        t = operations
        with self._begin("reading the operation log") as conn:
            rows = conn.execute(sa.select(t.c.record).order_by(t.c.id.desc()).limit(limit)).scalars().all()
        return [json.loads(r) for r in reversed(rows)]
