"""Real Alembic histories that open-source projects ship in their wheels (installed by the `test`
extra, never copied here), applied by `dbinit init` and by plain Alembic with a minimal env.py to
two fresh databases: the schema dumps are equal, plain Alembic reads dbinit's bookkeeping as its
own (`alembic current` shows the head, `alembic upgrade head` changes nothing), and the
application's own library opens the database dbinit built.

Needs DBINIT_TEST_POSTGRES_URL (pg_dump on PATH) and DBINIT_TEST_MYSQL_URL (mysqldump); without
one, its cases are skipped and say why.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from alembic import command
from alembic.script import ScriptDirectory

from dbinit_pipeline.configuration import load_config
from dbinit_pipeline.orchestration.jobs import run_in_process as run_init
from dbinit_pipeline_tests.conftest import unique_name
from dbinit_pipeline_tests.support.alembic import (
    alembic_config,
    current,
    failing_script,
    plain_upgrade,
)
from dbinit_pipeline_tests.support.histories import (
    History,
    Target,
    _open_mlflow_auth,
    _open_optuna,
    _project,
    _target,
    databases,  # noqa: F401 (a fixture: pytest finds it in this module's namespace)
)

# dbinit's own tables beside the history's (the core is turned off for these projects).


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


@pytest.mark.parametrize("provider", ["postgresql", "mysql"])
@pytest.mark.parametrize("history", HISTORIES, ids=[h.name for h in HISTORIES])
def test_a_real_history_applies_exactly_as_alembic_applies_it(
    history: History,
    provider: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    databases: list[tuple[Target, str]],  # noqa: F811 (the fixture imported above)
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
