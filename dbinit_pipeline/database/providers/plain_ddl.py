"""DDL compiled as Alembic compiles it outside Dagster, even in a process that imported Dagster.

Importing Dagster's SQL storage (`dagster._core.storage.sql`) registers process-wide
`sqlalchemy.ext.compiler.compiles` handlers for the MySQL dialect: `DateTime` becomes
`DATETIME(6)`, `TIMESTAMP` `TIMESTAMP(6)`, `Float` and `FLOAT` `FLOAT(32)` (a double). They
exist for Dagster's own tables. A dialect passed through `plain_ddl` compiles types with a type
compiler that skips every handler registered by a `dagster` module (and only those: handlers a
package's own code registers apply as they would under `alembic upgrade`), so a package's
migrations produce the same columns in `dbinit init` as in plain Alembic. Dagster's storage
keeps its handlers: its engines never pass through here.

A script that imports Dagster itself (Dagster's own storage history, shipped in its wheel) gets
the handlers under plain Alembic too, since its import registers them: while such a script runs
(`keeping_foreign_handlers`), they apply here as well.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from sqlalchemy.engine import Dialect
from sqlalchemy.sql.compiler import TypeCompiler

_FOREIGN_MODULES = ("dagster",)
_cache: dict[type[TypeCompiler], type[TypeCompiler]] = {}
_IMPORTS_FOREIGN = re.compile(r"^\s*(?:from|import)\s+(?:" + "|".join(_FOREIGN_MODULES) + r")\b", re.M)
_keep_foreign: ContextVar[bool] = ContextVar("dbinit_keep_foreign_handlers", default=False)


def imports_foreign(source: str) -> bool:
    """Whether a script's `source` imports a module whose `@compiles` handlers `plain_ddl` skips
    (so that plain Alembic would run it with them)."""
    return bool(_IMPORTS_FOREIGN.search(source))


@contextmanager
def keeping_foreign_handlers(keep: bool) -> Iterator[None]:
    """Within the block, `keep` decides whether Dagster's handlers apply (see the module doc)."""
    token = _keep_foreign.set(keep)
    try:
        yield
    finally:
        _keep_foreign.reset(token)


def _foreign(fn: Any) -> bool:
    module = getattr(fn, "__module__", "") or ""
    return module.split(".", 1)[0] in _FOREIGN_MODULES


def _dispatcher_of(cls: type) -> Any:
    """The `@compiles` dispatcher that `cls`'s instances compile through, or None."""
    for klass in cls.__mro__:
        found = klass.__dict__.get("_compiler_dispatcher")
        if found is not None:
            return found
        if "_compiler_dispatch" in klass.__dict__:
            return None
    return None


def _plain_compiler(base: type[TypeCompiler]) -> type[TypeCompiler]:
    cached = _cache.get(base)
    if cached is not None:
        return cached

    class PlainTypeCompiler(base):  # type: ignore[valid-type,misc]
        """`base`, except that `@compiles` handlers of Dagster's modules are not consulted."""

        def process(self, type_: Any, **kw: Any) -> str:
            dispatcher = _dispatcher_of(type(type_)) if not _keep_foreign.get() else None
            if dispatcher is not None:
                fn = dispatcher.specs.get(self.dialect.name)
                if fn is not None and _foreign(fn):
                    default = dispatcher.specs.get("default")
                    if default is not None and not _foreign(default):
                        return str(default(type_, self, **kw))
            return str(super().process(type_, **kw))

    PlainTypeCompiler.__name__ = f"Plain{base.__name__}"
    _cache[base] = PlainTypeCompiler
    return PlainTypeCompiler


def plain_ddl(dialect: Dialect) -> Dialect:
    """Make `dialect` compile types without Dagster's process-wide handlers; returns it."""
    current = dialect.type_compiler_instance
    if type(current).__name__.startswith("Plain"):
        return dialect
    dialect.type_compiler_instance = _plain_compiler(type(current))(dialect)
    # Alembic's offline mode and reflection use `type_compiler` too (the same instance).
    dialect.type_compiler = dialect.type_compiler_instance
    return dialect
