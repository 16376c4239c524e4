"""Real Alembic histories that open-source projects ship in their wheels (installed by the `test`
extra, never copied here), applied by `dbinit init` and by plain Alembic with a minimal env.py to
two fresh databases: the schema dumps are equal, plain Alembic reads dbinit's bookkeeping as its
own (`alembic current` shows the head, `alembic upgrade head` changes nothing), and the
application's own library opens the database dbinit built.

Needs DBINIT_TEST_POSTGRES_URL (pg_dump on PATH) and DBINIT_TEST_MYSQL_URL (mysqldump); without
one, its cases are skipped and say why.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml
from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import NullPool

from dbinit_pipeline.configuration import load_config
from dbinit_pipeline.orchestration.jobs import run_in_process as run_init
from dbinit_pipeline_tests.alembic_support import (
    alembic_config,
    current,
    failing_script,
    mysqldump_schema,
    pg_dump_schema,
    plain_upgrade,
)
from dbinit_pipeline_tests.conftest import TEST_URL_VAR, unique_name

# dbinit's own tables beside the history's (the core is turned off for these projects).
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


HISTORIES = [
    # Optuna's RDB storage: 10 revisions, enums, batch operations, ORM-session data migrations.
    History("optuna", "optuna", "storages/_rdb/alembic/versions", "alembic_version", _open_optuna),
    # MLflow's auth database: owns a `users` table (the core is off), merges permissions into roles.
    History(
        "mlflow_auth",
        "mlflow",
        "server/auth/db/migrations/versions",
        "alembic_version_auth",
        _open_mlflow_auth,
    ),
]


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


@pytest.mark.parametrize("provider", ["postgresql", "mysql"])
@pytest.mark.parametrize("history", HISTORIES, ids=[h.name for h in HISTORIES])
def test_a_real_history_applies_exactly_as_alembic_applies_it(
    history: History,
    provider: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    databases: list[tuple[Target, str]],
) -> None:
    target = _target(provider)
    by_dbinit, by_alembic = unique_name("hd"), unique_name("ha")
    databases.extend([(target, by_dbinit), (target, by_alembic)])
    config_path = _project(tmp_path, target, history, monkeypatch)

    target.create(by_alembic)
    versions = Path(__import__(history.distribution).__file__).parent / history.folder
    plain_b = alembic_config(tmp_path / "b", versions, target.at(by_alembic), history.version_table)
    done = plain_upgrade(tmp_path / "b", versions, target.at(by_alembic), history.version_table)
    if done.returncode != 0:
        # The history does not apply on this server under plain Alembic either: dbinit must fail
        # the same way, at the same script and line, with the server's same error.
        failed = failing_script(done.stderr, versions)
        server_error = re.search(r"\((\d{4}), (.+)\)\n\[SQL", done.stderr)
        assert failed is not None and server_error is not None, done.stderr
        response = run_init(load_config(config_path), "dev", database_name=by_dbinit)
        assert response["status"] == "error" and response["code"] == "migration_failed", response
        assert f"({failed[0]}, line {failed[1]})" in response["error"], (failed, response["error"])
        same_error = f"({server_error.group(1)}, {server_error.group(2)})".replace(by_alembic, by_dbinit)
        assert same_error in response["error"], (same_error, response["error"])
        return

    response = run_init(load_config(config_path), "dev", database_name=by_dbinit)
    assert response["status"] == "success", response
    assert response["result"]["health_check"] == "passed", response["result"]["health"]

    dump = target.dump(by_alembic)
    assert dump.count("CREATE TABLE") >= 5, dump
    assert target.dump(by_dbinit) == dump

    # Plain Alembic reads dbinit's bookkeeping as its own.
    heads = ScriptDirectory.from_config(plain_b).get_heads()
    plain = alembic_config(tmp_path / "a", versions, target.at(by_dbinit), history.version_table)
    shown = current(plain)
    assert len(heads) == 1 and f"{heads[0]} (head)" in shown, shown
    before = target.dump(by_dbinit)
    command.upgrade(plain, "head")
    assert target.dump(by_dbinit) == before and current(plain) == shown

    history.open(target.at(by_dbinit), tmp_path)
