"""Dagster's own storage history (dagster/_core/storage/alembic in the installed dagster), applied
to fresh databases by `dbinit init` and by plain Alembic with a minimal env.py.

Dagster never applies it to an empty database (its storage creates its tables from its models and
stamps the head; the history upgrades older databases under `dagster instance migrate`), so plain
Alembic stops in it: on PostgreSQL at 006_scheduler_update_postgres.py, which needs the instance
being migrated, on MariaDB at 033_add_asset_event_tags_table.py, whose foreign key the server
refuses. dbinit must stop at the same file and line with the same error and the same statement
(its scripts import Dagster, so Dagster's MySQL DDL applies to them as under plain Alembic), leave
the same schema behind, and Dagster's own storage must then open the database.
"""

from __future__ import annotations

import re
from pathlib import Path

import dagster
import pytest

from dbinit_pipeline.configuration import load_config
from dbinit_pipeline.orchestration.jobs import run_in_process as run_init
from dbinit_pipeline_tests.conftest import unique_name
from dbinit_pipeline_tests.support.alembic import failing_script, plain_upgrade
from dbinit_pipeline_tests.support.histories import History, Target, _project, _target, databases

__all__ = ["databases"]  # the fixture, used by name below

VERSIONS = Path(dagster.__file__).parent / "_core" / "storage" / "alembic" / "versions"


def _open_with_dagster(target: Target, database: str) -> None:
    """Dagster's PostgreSQL storage opens the database: it creates its tables, stamps its head in
    alembic_version, and stores and reads a run."""
    from dagster import DagsterRun
    from dagster_postgres.run_storage import PostgresRunStorage

    storage = PostgresRunStorage(target.at(database))
    try:
        storage.add_run(
            DagsterRun(job_name="opened_by_dagster", run_id="0" * 8 + "-0000-0000-0000-000000000000")
        )
        assert [r.job_name for r in storage.get_runs()] == ["opened_by_dagster"]
        storage.optimize_for_webserver(statement_timeout=1000, pool_recycle=-1, max_overflow=0)
    finally:
        storage.dispose()


def _one_line(sql: str) -> str:
    return " ".join(sql.split())


@pytest.mark.parametrize("provider", ["postgresql", "mysql"])
def test_dagsters_own_history_stops_where_plain_alembic_stops_and_dagster_opens_the_result(
    provider: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, databases: list[tuple[Target, str]]
) -> None:
    target = _target(provider)
    by_dbinit, by_alembic = unique_name("dd"), unique_name("da")
    databases.extend([(target, by_dbinit), (target, by_alembic)])
    for name in (by_dbinit, by_alembic):
        target.create(name)  # existing databases: dbinit keeps what its failed run left
    history = History(
        "dagster_storage", "dagster", "_core/storage/alembic/versions", "alembic_version", print
    )
    config_path = _project(tmp_path, target, history, monkeypatch)

    done = plain_upgrade(
        tmp_path / "plain", VERSIONS, target.at(by_alembic), "alembic_version", scripts_import_dagster=True
    )
    assert done.returncode != 0, "Dagster's history was expected to stop under plain Alembic"
    failed = failing_script(done.stderr, VERSIONS)
    assert failed is not None, done.stderr
    # The traceback's last "<module>.<Exception>: message" line.
    raised = re.findall(r"^([\w.]+(?:Error|Exception)): (.*)$", done.stderr, re.M)
    assert raised, done.stderr
    exception, message = raised[-1]
    message = re.sub(r"^\([\w.]+\) ", "", message)  # SQLAlchemy's "(driver.Error) " prefix

    response = run_init(load_config(config_path), "dev", database_name=by_dbinit)
    assert response["status"] == "error" and response["code"] == "migration_failed", response
    details = response["details"]
    assert details["file"] == failed[0], (details, failed)
    assert f"({failed[0]}, line {failed[1]})" in response["error"], (failed, response["error"])
    assert details["exception"] == exception.rsplit(".", 1)[-1], (details, raised[-1])
    assert message.replace(by_alembic, by_dbinit) in response["error"], (message, response["error"])
    statement = re.search(r"\[SQL: (.+?)\]\n", done.stderr, re.S)
    if statement is not None:
        # The same DDL, Dagster's MySQL types included (TIMESTAMP(6), not TIMESTAMP).
        assert _one_line(details["statement"]) == _one_line(statement.group(1)), (details, statement.group(1))

    assert target.dump(by_dbinit) == target.dump(by_alembic)

    if provider == "postgresql":
        _open_with_dagster(target, by_dbinit)
