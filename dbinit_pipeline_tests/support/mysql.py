"""A real MySQL or MariaDB server for the tests, and throw-away projects pointed at it.

The server comes from DBINIT_TEST_MYSQL_URL (.ci/run sets it when 127.0.0.1:3306 answers).
Assertions read the server through PyMySQL directly, not through the provider under test.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pymysql
import pytest
import yaml
from sqlalchemy.engine import URL, make_url

from dbinit_pipeline.configuration import LoadedConfig, load_config
from dbinit_pipeline_tests.conftest import unique_name, write_migration, write_project_config

MYSQL_URL_VAR = "DBINIT_TEST_MYSQL_URL"
TARGET_VAR = "DBINIT_TEST_MYSQL_TARGET_URL"


@dataclass(frozen=True)
class MySQLServer:
    """A MySQL/MariaDB server the tests may create databases (and one-off accounts) on."""

    url: str  # password included; never printed

    def connect(self, database: str | None = None, **overrides: Any) -> pymysql.connections.Connection[Any]:
        u = make_url(self.url)
        args: dict[str, Any] = {
            "host": u.host or "127.0.0.1",
            "port": u.port or 3306,
            "user": u.username,
            "password": u.password or "",
            "database": database,
            "autocommit": True,
            "charset": "utf8mb4",
        }
        return pymysql.connect(**{**args, **overrides})

    def query(self, sql: str, params: Any = None, *, database: str | None = None) -> list[tuple[Any, ...]]:
        with self.connect(database) as conn, conn.cursor() as cur:
            cur.execute(sql, params)
            return list(cur.fetchall())

    def url_as(self, user: str, password: str) -> str:
        """This server's URL for another account, naming no database."""
        u = make_url(self.url)
        other = URL.create(u.drivername, username=user, password=password, host=u.host, port=u.port)
        return other.render_as_string(hide_password=False)

    def database_exists(self, name: str) -> bool:
        return bool(self.query("SELECT 1 FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = %s", (name,)))

    def charset(self, name: str) -> tuple[str, str]:
        rows = self.query(
            "SELECT DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME FROM information_schema.SCHEMATA"
            " WHERE SCHEMA_NAME = %s",
            (name,),
        )
        return (rows[0][0], rows[0][1])

    def tables(self, database: str) -> set[str]:
        rows = self.query(
            "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s", (database,)
        )
        return {r[0] for r in rows}

    def foreign_keys(self, database: str) -> set[tuple[str, str]]:
        rows = self.query(
            "SELECT TABLE_NAME, REFERENCED_TABLE_NAME FROM information_schema.KEY_COLUMN_USAGE"
            " WHERE TABLE_SCHEMA = %s AND REFERENCED_TABLE_NAME IS NOT NULL",
            (database,),
        )
        return {(r[0], r[1]) for r in rows}

    def ledger(self, database: str) -> list[tuple[str, str]]:
        rows = self.query("SELECT package, revision FROM dbinit_migrations", database=database)
        return sorted((r[0], r[1]) for r in rows)

    def heads(self, database: str) -> set[str]:
        """Every package's head: the rows of all per-package version tables."""
        tables = [t for t in self.tables(database) if t.startswith("alembic_version_")]
        return {r[0] for t in tables for r in self.query(f"SELECT version_num FROM `{t}`", database=database)}

    def drop(self, name: str) -> None:
        self.query(f"DROP DATABASE IF EXISTS `{name}`")


@dataclass
class MySQLProject:
    """A throw-away project folder whose dbinit.yaml says provider mysql, hosting local."""

    root: Path
    server: MySQLServer
    created: list[str] = field(default_factory=list)

    @property
    def config_path(self) -> Path:
        return self.root / "dbinit.yaml"

    def write_config(self, **overrides: Any) -> Path:
        return write_project_config(self.config_path, "mysql", TARGET_VAR, overrides)

    def config(self) -> LoadedConfig:
        return load_config(self.config_path)

    def database(self) -> str:
        """A fresh database name, dropped at teardown."""
        name = unique_name("my")
        self.created.append(name)
        return name

    def write_package(
        self,
        name: str,
        *,
        depends_on: list[str] | None = None,
        migrations: list[tuple[str, str | None, str]] | None = None,
    ) -> Path:
        """A package folder; migrations are (revision, down_revision, body of upgrade())."""
        folder = self.root / "packages" / name
        (folder / "migrations").mkdir(parents=True, exist_ok=True)
        manifest = {"name": name, "version": "1.0.0", "depends_on": depends_on or []}
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


@pytest.fixture(scope="session")
def mysql_server() -> MySQLServer:
    """The server in DBINIT_TEST_MYSQL_URL; the tests are skipped, saying why, without it."""
    url = os.environ.get(MYSQL_URL_VAR)
    if not url:
        pytest.skip(f"{MYSQL_URL_VAR} is not set: no MySQL/MariaDB server to test against")
    server = MySQLServer(url)
    try:
        server.query("SELECT 1")
    except pymysql.err.OperationalError as exc:
        pytest.fail(f"{MYSQL_URL_VAR} is set but its server does not answer: {exc.args[0]}")
    return server


@pytest.fixture
def mysql_project(
    tmp_path: Path, mysql_server: MySQLServer, monkeypatch: pytest.MonkeyPatch
) -> Iterator[MySQLProject]:
    (tmp_path / "packages").mkdir()
    monkeypatch.setenv(TARGET_VAR, mysql_server.url)
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    proj = MySQLProject(tmp_path, mysql_server)
    proj.write_config()
    yield proj
    for name in proj.created:
        mysql_server.drop(name)


@pytest.fixture
def mysql_account(mysql_server: MySQLServer) -> Iterator[tuple[str, str]]:
    """A one-off account with no privileges at all: (user, password); dropped at teardown."""
    user = f"dbinit_t_{uuid.uuid4().hex[:8]}"
    password = f"pw-{uuid.uuid4().hex}"
    mysql_server.query("CREATE USER %s@'%%' IDENTIFIED BY %s", (user, password))
    yield user, password
    mysql_server.query("DROP USER IF EXISTS %s@'%%'", (user,))
