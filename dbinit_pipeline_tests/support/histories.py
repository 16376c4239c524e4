"""Shared test helpers (no tests here)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import NullPool

from dbinit_pipeline_tests.conftest import TEST_URL_VAR
from dbinit_pipeline_tests.support.alembic import (
    mysqldump_schema,
    pg_dump_schema,
)

DBINIT_TABLES = ("dbinit_migrations", "dbinit_schema_snapshots", "dbinit_in_progress")


def _open_optuna(url: str, tmp: Path) -> None:
    import optuna

    storage = optuna.storages.RDBStorage(url)
    study = optuna.create_study(storage=storage, study_name="opened-by-optuna")
    study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=2)
    assert len(optuna.load_study(study_name="opened-by-optuna", storage=url).trials) == 2


def _open_mlflow_auth(url: str, tmp: Path) -> None:
    from mlflow.server.auth.sqlalchemy_store import SqlAlchemyStore

    store = SqlAlchemyStore()
    store.init_db(url)  # mlflow's own check: upgrades unless alembic_version_auth is at head
    store.create_user("opened-by-mlflow", "a-long-enough-password")
    assert store.has_user("opened-by-mlflow")


@dataclass(frozen=True)
class History:
    name: str
    distribution: str
    folder: str  # inside the installed top-level package
    version_table: str  # the one the application's own env.py configures
    open: Callable[[str, Path], None]


@dataclass(frozen=True)
class Target:
    provider: str
    url: URL

    def at(self, database: str) -> str:
        return self.url.set(database=database).render_as_string(hide_password=False)

    def create(self, database: str) -> None:
        ddl = f'CREATE DATABASE "{database}"'
        if self.provider == "mysql":
            ddl = f"CREATE DATABASE `{database}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
        self._admin(ddl)

    def drop(self, database: str) -> None:
        if self.provider == "mysql":
            self._admin(f"DROP DATABASE IF EXISTS `{database}`")
        else:
            self._admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')

    def _admin(self, ddl: str) -> None:
        engine = sa.create_engine(self.url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(sa.text(ddl))
        engine.dispose()

    def dump(self, database: str) -> str:
        if self.provider == "mysql":
            return mysqldump_schema(self.at("mysql"), database, DBINIT_TABLES)
        return pg_dump_schema(self.at("postgres"), database, DBINIT_TABLES)


def _target(provider: str) -> Target:
    variable = "DBINIT_TEST_MYSQL_URL" if provider == "mysql" else "DBINIT_TEST_POSTGRES_URL"
    raw = os.environ.get(variable)
    if not raw:
        pytest.skip(f"{variable} is not set: no {provider} server to apply the histories to")
    tool = "mysqldump" if provider == "mysql" else "pg_dump"
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed: the schemas cannot be compared")
    url = make_url(raw)
    if provider == "postgresql":
        url = url.set(drivername="postgresql+psycopg")
    return Target(provider, url)


@pytest.fixture
def databases(request: pytest.FixtureRequest) -> Iterator[list[tuple[Target, str]]]:
    created: list[tuple[Target, str]] = []
    yield created
    for target, name in created:
        target.drop(name)


def _project(tmp: Path, target: Target, history: History, monkeypatch: pytest.MonkeyPatch) -> Path:
    package = tmp / "packages" / history.name
    package.mkdir(parents=True)
    manifest: dict[str, Any] = {
        "name": history.name,
        "version": "1.0.0",
        "description": f"{history.name}'s own Alembic history, from its installed wheel",
        "migrations": {"package": history.distribution, "path": history.folder},
        "version_table": history.version_table,
    }
    (package / "package.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    config = {
        "project": "histories",
        "database": {"provider": target.provider, "hosting": "local"},
        "environments": {"dev": {"connection_string_env": TEST_URL_VAR}},
        "packages": {"paths": ["packages"], "entry_points": False},
        "core": {"enabled": False},
        "integration": {"operation_log": ".dbinit/operations.jsonl"},
    }
    path = tmp / "dbinit.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    monkeypatch.setenv(TEST_URL_VAR, target.at("postgres" if target.provider == "postgresql" else "mysql"))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    return path
