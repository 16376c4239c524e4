"""The private hooks of Alembic, SQLAlchemy and psycopg that the fast paths and the catalog use.

Each is a name and a signature this project relies on without the library promising them; these
tests fail loudly, naming the hook, when an upgrade changes one (pyproject bounds the versions
to the tested range, so an upgrade is a deliberate change that runs these first).
"""

from __future__ import annotations

import inspect

import psycopg
from alembic.ddl.impl import DefaultImpl
from sqlalchemy.dialects.postgresql.base import PGDialect


def test_alembic_default_impl_exec_keeps_the_signature_write_behind_replaces() -> None:
    # fastpath/write_behind.py assigns its own _exec on one impl instance and calls the original
    # with (construct, execution_options, multiparams[, params]).
    params = list(inspect.signature(DefaultImpl._exec).parameters)
    assert params == ["self", "construct", "execution_options", "multiparams", "params"], (
        f"alembic DefaultImpl._exec changed to {params}: review fastpath/write_behind.py"
    )


def test_sqlalchemy_postgresql_dialect_still_reflects_types_by_name() -> None:
    # database/providers/pg_catalog.py renders catalog type names through PGDialect._reflect_type.
    hook = getattr(PGDialect, "_reflect_type", None)
    assert callable(hook), "SQLAlchemy's PGDialect._reflect_type is gone: review pg_catalog.py"
    # called as reflect(format_type, named_type_loader, type_description=, collation=, collation_schema=)
    params = list(inspect.signature(hook).parameters)
    assert params[:3] == ["self", "format_type", "named_type_loader"], params
    assert {"type_description", "collation", "collation_schema"} <= set(params), (
        f"PGDialect._reflect_type changed to {params}: review pg_catalog.py"
    )


def test_psycopg_has_pipeline_mode_and_result_status() -> None:
    # write_behind sends in pipeline mode and reads each cursor's pgresult status.
    assert hasattr(psycopg.Connection, "pipeline")
    assert hasattr(psycopg.Pipeline, "is_supported")
    assert hasattr(psycopg.Cursor, "pgresult")
