"""The core in a PostgreSQL schema of its own (`core: {schema: NAME}` in dbinit.yaml).

By default the core's tables (users, sessions, ... workspaces) sit in the connection's current
schema beside every package's, so a history that owns a table of one of those names cannot be
applied. With `core.schema`, the core's scripts run with `search_path` set to that schema alone
(created when missing), so every table, index and sequence they create, and every unqualified
name their SQL uses, is in it; its version table is there too. Packages keep the connection's
current schema, the ledger stays there as well.

Tables of a package that has a schema are named `<schema>.<table>` wherever verify, health and
the registry key tables by name (expected shapes, live shapes, table owners, version tables), so
the core's `users` and a package's `users` are two tables.

MySQL and MariaDB have no schema inside a database (a schema is a database there), so the
setting is refused for them, naming the key.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

from sqlalchemy import Connection, text

from dbinit_pipeline.database.catalog import TableShape
from dbinit_pipeline.database.providers import Provider

if TYPE_CHECKING:
    from dbinit_pipeline.migrations.package import Package

# Schemas that are never the core's: the default one (leave the key out for it) and the server's.


def qualified(pkg: Package, table: str) -> str:
    """How verify, health and the registry name `table` of `pkg`: `<schema>.<table>` where the
    package has a schema of its own, else the bare name."""
    return f"{pkg.schema}.{table}" if pkg.schema else table


def _quoted(schema: str) -> str:
    return '"' + schema.replace('"', '""') + '"'


@contextmanager
def searching(conn: Connection, schema: str) -> Iterator[None]:
    """Inside the current transaction: `search_path` is `schema` alone (created when missing), and
    what it was before once the block ends. Transaction-local (`set_config(..., true)`), so a
    rollback restores it as well."""
    previous = conn.execute(text("SELECT current_setting('search_path')")).scalar_one()
    conn.execute(text(f"CREATE SCHEMA IF NOT EXISTS {_quoted(schema)}"))
    conn.execute(text("SELECT set_config('search_path', :path, true)"), {"path": _quoted(schema)})
    yield
    conn.execute(text("SELECT set_config('search_path', :path, true)"), {"path": previous})


def offline_enter(schema: str) -> str:
    """What `plan --sql` shows before the scripts of a package with a schema of its own."""
    return f"CREATE SCHEMA IF NOT EXISTS {_quoted(schema)};\nSET search_path TO {_quoted(schema)};\n"


def offline_leave() -> str:
    """What `plan --sql` shows after them."""
    return "RESET search_path;\n"


def describe_placed(
    conn: Connection, packages: Sequence[Package], provider: Provider
) -> dict[str, TableShape]:
    """Live shapes of every table in the schemas of `packages` that have one, named
    `<schema>.<table>`; a schema that does not exist yet has none."""
    found: dict[str, TableShape] = {}
    for schema in sorted({p.schema for p in packages if p.schema}):
        names = conn.execute(
            text("SELECT tablename FROM pg_tables WHERE schemaname = :s"), {"s": schema}
        ).scalars()
        tables = [str(n) for n in names]
        if not tables:
            continue
        previous = conn.execute(text("SELECT current_setting('search_path')")).scalar_one()
        conn.execute(text("SELECT set_config('search_path', :path, true)"), {"path": _quoted(schema)})
        try:
            shapes = provider.describe_live(conn, tables)
        finally:
            conn.execute(text("SELECT set_config('search_path', :path, true)"), {"path": previous})
        found.update({f"{schema}.{name}": shape for name, shape in shapes.items()})
    return found
