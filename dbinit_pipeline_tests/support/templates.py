"""Shared test helpers (no tests here)."""

from __future__ import annotations

import json
from typing import Any

from dbinit_pipeline.pipeline.templates import (
    TEMPLATE_PREFIX,
)
from dbinit_pipeline_tests.conftest import PgServer


def templates_of(pg: PgServer) -> dict[str, tuple[bool, bool, dict[str, Any]]]:
    """name -> (datistemplate, datallowconn, comment) of every dbinit template on the server."""
    with pg.connect() as conn:
        rows = conn.execute(
            "SELECT datname, datistemplate, datallowconn, shobj_description(oid, 'pg_database')"
            " FROM pg_database WHERE starts_with(datname, %s)",
            (TEMPLATE_PREFIX,),
        ).fetchall()
    return {r[0]: (r[1], r[2], json.loads(r[3]) if r[3] else {}) for r in rows}


def drop_template(pg: PgServer, name: str) -> None:
    with pg.connect() as conn:
        conn.execute(f'ALTER DATABASE "{name}" WITH IS_TEMPLATE false')
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
