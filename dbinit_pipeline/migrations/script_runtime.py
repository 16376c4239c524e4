"""Alembic's runtime around a package's revision scripts, as `alembic upgrade` provides it.

A script may use `op` and `alembic.context` alike: `context.get_bind()`, `context.config`,
`context.is_offline_mode()`, `context.get_x_argument()`, `context.get_context()`. An
`EnvironmentContext` is installed as `alembic.context` for as long as scripts run; its `config`
and `script` are those of the package whose script is running (its migrations folder is the
script location).

`op.get_context().autocommit_block()` needs the migration context to own the connection's
transaction, as under env.py's `context.begin_transaction()`; `own_transaction` makes it so, and
`on_autocommit` lets the runner act where the atomic unit is split (record what is done, drain
deferred statements, take its lock again afterwards).
"""

from __future__ import annotations

import argparse
import io
import threading
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic.config import Config
from alembic.operations import Operations
from alembic.runtime.environment import EnvironmentContext
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection

from dbinit_pipeline.database.providers.plain_ddl import plain_ddl
from dbinit_pipeline.migrations.core import CORE_PACKAGE_DIR
from dbinit_pipeline.migrations.package import Migration

# Alembic's `op` and `alembic.context` are module-level proxies (and an Alembic project's env.py
# also edits sys.path): a process runs one migration context at a time. Everything that installs
# them holds this lock for as long as they are installed, so that two threads of one process
# (a fleet step's tenants) never run a script against the other's connection. Processes (the
# multiprocess and Celery executors) each have their own.
ALEMBIC_RUNTIME = threading.RLock()


def package_config(migrations_dir: Path) -> Config:
    """The Alembic `Config` a package's scripts see as `context.config`."""
    config = Config()
    config.set_main_option("script_location", str(migrations_dir))
    config.set_main_option("version_locations", str(migrations_dir))
    config.cmd_opts = argparse.Namespace(x=[])
    return config


class ScriptEnvironment:
    """One `EnvironmentContext` for a batch of scripts; `enter(migration)` points it at the
    running script's package."""

    def __init__(self, env: EnvironmentContext, context: MigrationContext) -> None:
        self.env = env
        self.context = context
        self._folders: dict[Path, tuple[Config, ScriptDirectory]] = {}

    def enter(self, m: Migration) -> None:
        folder = m.path.parent
        found = self._folders.get(folder)
        if found is None:
            # Building a ScriptDirectory reads no script: its revision map loads on first use.
            found = self._folders[folder] = (package_config(folder), ScriptDirectory(str(folder)))
        self.env.config, self.env.script = found


@contextmanager
def script_environment(
    *,
    connection: Connection | None = None,
    dialect_name: str | None = None,
    output: io.StringIO | None = None,
) -> Iterator[ScriptEnvironment]:
    """Alembic's runtime (`op` and `alembic.context`) online on `connection`, or offline for
    `dialect_name` writing SQL to `output`."""
    folder = CORE_PACKAGE_DIR / "migrations"
    env = EnvironmentContext(package_config(folder), ScriptDirectory(str(folder)))
    opts: dict[str, Any] = {}
    if connection is None:
        opts = {"as_sql": True, "output_buffer": output, "literal_binds": True, "dialect_name": dialect_name}
    else:
        opts = {"connection": connection}
    with ALEMBIC_RUNTIME, env:
        env.configure(**opts)
        ctx = env.get_context()
        if ctx.dialect is not None:
            plain_ddl(ctx.dialect)
        with Operations.context(ctx):
            yield ScriptEnvironment(env, ctx)


def own_transaction(ctx: MigrationContext, connection: Connection) -> None:
    """Let `ctx` own the connection's current transaction, as env.py's `begin_transaction` does,
    so that `autocommit_block()` can commit it and begin the next one."""
    ctx._transaction = connection.get_transaction()


def on_autocommit(ctx: MigrationContext, before: Callable[[], None], after: Callable[[], None]) -> None:
    """Run `before` when a script enters `autocommit_block()` (before Alembic commits) and `after`
    once Alembic has begun the next transaction (for as long as `ctx` lives)."""
    original = ctx.autocommit_block

    @contextmanager
    def autocommit_block() -> Iterator[None]:
        before()
        with original():
            yield
        after()

    ctx.autocommit_block = autocommit_block  # type: ignore[method-assign]


def script_line(exc: BaseException, path: Path) -> int | None:
    """The line of `path` where `exc` was raised (the innermost frame in that file), or None."""
    line: int | None = None
    target = str(path)
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename == target:
            line = frame.lineno
    return line
