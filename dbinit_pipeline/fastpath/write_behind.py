"""Fast path `write_behind`: a batch's DDL pipelined to PostgreSQL while the next script runs.

It replaces `_exec` of Alembic's `DefaultImpl` on one migration context for the life of a batch
(a private method: tests/unit/test_private_hooks.py fails if its signature changes). Off
(DBINIT_FAST_PATHS_OFF=write_behind): every statement is executed synchronously by Alembic.
"""

from __future__ import annotations

import enum
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from typing import Any, Protocol

from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, event
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.ddl import ExecutableDDLElement

from dbinit_pipeline.errors import DbinitError, MigrationError
from dbinit_pipeline.fastpath import enabled


class Step(Protocol):
    """One revision as the write-behind sees it."""

    @property
    def key(self) -> tuple[str, str]: ...

    @property
    def uses_dbapi(self) -> bool: ...


@dataclass(frozen=True)
class _Deferred:
    migration: Step
    statement: str


class WriteBehind:
    """Pipeline the DDL of a batch to the server, so that it never waits for Python in between.

    Applying a migration is Python (import the script, build SQLAlchemy tables, compile DDL)
    and then the server executing the statements; one after the other, the two add up. Here
    Alembic's DDL is compiled on the main thread and handed to a sender thread, which sends it
    in order, in libpq pipeline mode, on the batch's own connection and inside its one
    transaction, while the main thread goes on with the next migration: the server always has
    the next statement waiting. Same statements, same order, same transaction, same lock.

    - Only DDL constructs without parameters are deferred. Before anything else SQLAlchemy
      executes on the connection (a query of a data migration, an ENUM's CREATE TYPE, the
      ledger), every deferred statement has run and the pipeline is closed, so the server sees
      exactly the order of a synchronous run. A script that touches the DBAPI connection itself
      (`Migration.uses_dbapi`) runs only after all before it has run, with nothing deferred.
    - A server error stops the sender (the transaction is aborted anyway) and is raised,
      attributed to the migration and the statement that failed, at the next deferral, before
      the next synchronous statement, or at `drain()`, whichever comes first. It is sticky: a
      script that swallows it cannot hide it from `drain()`.
    - A ledger entry's duration is its script's Python time plus its statements' time on the
      server as the client sees it (from when a statement could start to when its result came).
    """

    def __init__(
        self,
        conn: Connection,
        dbapi: Any,
        impl: Any,
        failure: Callable[[Any, BaseException], DbinitError],
    ) -> None:
        self.dialect = conn.dialect
        self.dbapi = dbapi
        self.failure = failure
        self.queue: queue.Queue[_Deferred | _Marker] = queue.Queue()
        self.error: DbinitError | None = None
        self.current: Step | None = None
        # Inside a script's autocommit_block(): nothing is deferred.
        self.suspended = False
        self.server_s: dict[tuple[str, str], float] = {}
        self._original_exec = impl._exec
        self._drained = threading.Event()
        self._abandon = False
        self._thread = threading.Thread(target=self._send, name="dbinit-ddl-sender", daemon=True)
        # Sender state: the open pipeline, and statements sent whose result has not come yet.
        self._pipeline: ExitStack | None = None
        self._inflight: deque[tuple[_Deferred, Any, float]] = deque()
        self._last_result = 0.0

    @classmethod
    @contextmanager
    def over(
        cls,
        conn: Connection,
        ctx: MigrationContext,
        failure: Callable[[Any, BaseException], DbinitError],
    ) -> Iterator[WriteBehind | None]:
        """A write-behind for `ctx` on `conn` where it is safe, else None (everything synchronous)."""
        dbapi = conn.connection.driver_connection
        dispatch = conn.dispatch
        listened = any(
            bool(listeners)
            for listeners in (
                dispatch.before_execute,
                dispatch.after_execute,
                dispatch.before_cursor_execute,
                dispatch.after_cursor_execute,
            )
        )
        if (
            not enabled("write_behind")
            or dbapi is None
            or conn.dialect.name != "postgresql"
            or conn.dialect.driver != "psycopg"
            or not _pipeline_supported()
            or listened  # someone watches each statement: keep them all on SQLAlchemy's path
            or conn.get_execution_options().get("schema_translate_map")
            or ctx.impl.as_sql
        ):
            yield None
            return
        behind = cls(conn, dbapi, ctx.impl, failure)
        behind._thread.start()
        ctx.impl._exec = behind._exec  # type: ignore[method-assign]
        event.listen(conn, "before_cursor_execute", behind._before_synchronous)
        try:
            yield behind
        except BaseException:
            behind._abandon = True
            raise
        finally:
            event.remove(conn, "before_cursor_execute", behind._before_synchronous)
            del ctx.impl._exec  # back to the class's own method
            behind.queue.put(_Marker.STOP)
            behind._thread.join()

    # -- main thread -----------------------------------------------------------------------
    def start(self, m: Step) -> None:
        self._raise_pending()
        if m.uses_dbapi:
            self.drain()
        self.current = m

    def finish(self, m: Step) -> None:
        self.current = None
        if m.uses_dbapi:
            self.drain()

    def drain(self) -> None:
        """Wait until every deferred statement has run and the pipeline is closed; raise the
        first failure."""
        self._drained.clear()
        self.queue.put(_Marker.DRAIN)
        while not self._drained.wait(1.0):
            if not self._thread.is_alive():
                raise MigrationError("The DDL sender thread stopped before sending every statement")
        self._raise_pending()

    def server_ms(self, key: tuple[str, str]) -> int:
        """Time the server spent on the deferred statements of the step `key`, as the client saw it."""
        return int(self.server_s.get(key, 0.0) * 1000)

    def _raise_pending(self) -> None:
        if self.error is not None:
            raise self.error

    def _exec(
        self,
        construct: Any,
        execution_options: Any = None,
        multiparams: Any = None,
        params: Any = None,
    ) -> Any:
        self._raise_pending()
        m = self.current
        if (
            m is not None
            and not self.suspended
            and not m.uses_dbapi
            and isinstance(construct, ExecutableDDLElement)
            and not execution_options
            and not multiparams
            and not params
        ):
            self.queue.put(_Deferred(m, str(construct.compile(dialect=self.dialect))))
            return None
        if params is None:
            return self._original_exec(construct, execution_options, multiparams)
        return self._original_exec(construct, execution_options, multiparams, params)

    def _before_synchronous(self, *_: Any) -> None:
        self.drain()

    # -- sender thread ---------------------------------------------------------------------
    def _send(self) -> None:
        while True:
            item = self.queue.get()
            try:
                if not isinstance(item, _Deferred):
                    self._close_pipeline()
                elif not (self._abandon or self.error is not None):
                    self._send_one(item)
            except BaseException as exc:  # never leave the main thread waiting on a dead sender
                if self.error is None:
                    self.error = MigrationError(f"Sending deferred DDL failed: {type(exc).__name__}: {exc}")
            finally:
                if not isinstance(item, _Deferred):
                    self._drained.set()
            if item is _Marker.STOP:
                return

    def _send_one(self, item: _Deferred) -> None:
        try:
            if self._pipeline is None:
                self._pipeline = ExitStack()
                self._pipeline.enter_context(self.dbapi.pipeline())
                self._last_result = time.perf_counter()
            cursor = self.dbapi.cursor()
            self._inflight.append((item, cursor, time.perf_counter()))
            # The parameters SQLAlchemy itself passes for DDL, so that `%%` reads as `%` (without a
            # `%` there is nothing to unescape, and psycopg need not scan the statement); the
            # call sends the statement and collects whatever results have come back meanwhile.
            cursor.execute(item.statement, {} if "%" in item.statement else None)
            self._collect()
        except Exception as exc:
            self._failed(exc)

    def _close_pipeline(self) -> None:
        """Sync: wait for every result, leave pipeline mode."""
        if self._pipeline is None:
            return
        pipeline, self._pipeline = self._pipeline, None
        try:
            pipeline.close()
            self._collect()
        except Exception as exc:
            self._failed(exc)
        finally:
            for _, cursor, _ in self._inflight:
                with suppress(Exception):
                    cursor.close()
            self._inflight.clear()

    def _collect(self) -> None:
        """Note the statements whose result has come back (results come in order)."""
        while self._inflight and self._inflight[0][1].pgresult is not None:
            item, cursor, sent = self._inflight.popleft()
            now = time.perf_counter()
            key = item.migration.key
            self.server_s[key] = self.server_s.get(key, 0.0) + now - max(sent, self._last_result)
            self._last_result = now
            with suppress(Exception):
                cursor.close()

    def _failed(self, exc: Exception) -> None:
        """The first statement without a good result is the one the server refused."""
        if self.error is not None:
            return
        failed = next(
            (item for item, cursor, _ in self._inflight if not _succeeded(cursor)),
            self._inflight[-1][0] if self._inflight else None,
        )
        if failed is None:
            self.error = MigrationError(f"Sending deferred DDL failed: {type(exc).__name__}: {exc}")
        else:
            self.error = self.failure(failed.migration, self._wrap(exc, failed.statement))
        if self._pipeline is not None:
            pipeline, self._pipeline = self._pipeline, None
            with suppress(Exception):
                pipeline.close()
        for _, cursor, _ in self._inflight:
            with suppress(Exception):
                cursor.close()
        self._inflight.clear()

    def _wrap(self, exc: Exception, statement: str) -> BaseException:
        """The exception SQLAlchemy would have raised for this statement."""
        dbapi = self.dialect.loaded_dbapi
        if not isinstance(exc, dbapi.Error):
            return exc
        return DBAPIError.instance(statement, {}, exc, dbapi.Error, dialect=self.dialect, ismulti=False)


class _Marker(enum.Enum):
    DRAIN = "drain"
    STOP = "stop"


def _succeeded(cursor: Any) -> bool:
    result = cursor.pgresult
    return result is not None and result.status in (1, 2)  # COMMAND_OK, TUPLES_OK


def _pipeline_supported() -> bool:
    try:
        import psycopg

        return bool(psycopg.Pipeline.is_supported())
    except Exception:
        return False
