"""Cleanup drops only what the run created (never on a protected environment), and recreate or
rebuild schedules are refused for protected environments at load time and at run time."""

from __future__ import annotations

import pytest
from sqlalchemy.engine import make_url

from dbinit_pipeline.configuration import load_config
from dbinit_pipeline.database.server import DatabaseServer, ServerRef
from dbinit_pipeline.errors import ConfigurationError, InputError, classify
from dbinit_pipeline.migrations.core.models import CORE_TABLES
from dbinit_pipeline.pipeline.create import ensure_database
from dbinit_pipeline.pipeline.validate import InitParams, build_plan
from dbinit_pipeline_tests.conftest import TEST_URL_VAR, Project
from dbinit_pipeline_tests.support.safety import cli, store, with_approvers

FAILING = (
    "bad0001",
    None,
    "op.create_table('half_done', sa.Column('id', sa.Integer))\nop.execute('SELECT 1/0')",
)


def test_a_database_this_run_created_is_dropped_when_a_later_stage_fails(project: Project) -> None:
    project.write_package("bad", migrations=[FAILING])
    name = project.database()
    response = project.run(database_name=name)
    assert response["status"] == "error"
    assert response["stage"] == "package_schemas"
    assert response["code"] == "migration_failed"
    assert response["cleanup"]["database"] == "dropped"
    assert response["cleanup"]["name"] == name
    assert "this run created it" in response["cleanup"]["reason"]
    assert not project.server.database_exists(name)
    assert project.operations()[-1]["cleanup"]["database"] == "dropped"


def test_after_cleanup_dropped_the_database_a_later_stage_names_it_and_what_to_do(project: Project) -> None:
    """What a re-execution from failure meets once cleanup has dropped the database: the stages
    after create reconnect to a database that is gone. A permanent error that names it and says
    to launch a new run, not a retried connection failure."""
    project.write_package("bad", migrations=[FAILING])
    name = project.database()
    assert project.run(database_name=name)["cleanup"]["database"] == "dropped"
    display = make_url(project.server.url).render_as_string(hide_password=True)
    server = DatabaseServer(ServerRef("postgresql", display, f"env:{TEST_URL_VAR}", "postgres"))
    with pytest.raises(Exception) as raised, server.connect(name):
        pass
    error = classify(raised.value, during="applying package schemas")
    assert error.code == "database_missing" and not error.transient
    assert f"The database {name} does not exist while applying package schemas" in error.message
    assert any("launch a new run" in s for s in error.suggestions)
    password = project.server.password
    assert not password or password not in error.message


def test_a_database_that_existed_before_is_never_dropped(project: Project) -> None:
    name = project.database()
    with project.server.connect() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    with project.server.connect(name) as conn:
        conn.execute("CREATE TABLE precious (id int)")
    project.write_package("bad", migrations=[FAILING])
    response = project.run(database_name=name)
    assert response["stage"] == "package_schemas"
    assert response["cleanup"]["database"] == "kept"
    assert "existed before this run" in response["cleanup"]["reason"]
    tables = project.server.tables(name)
    assert "precious" in tables
    assert "half_done" not in tables, "the failed package stage rolled back as a whole"
    assert set(CORE_TABLES) <= tables, "the core stage committed before the package stage failed"


def test_a_database_created_in_a_protected_environment_is_kept(project: Project) -> None:
    with_approvers(project)
    project.write_package("bad", migrations=[FAILING])
    name = project.database()
    assert cli(project, "approve", "production", "--database-name", name, "--by", "alice")[0] == 0
    response = project.run("production", database_name=name)
    assert response["stage"] == "package_schemas", response
    assert response["cleanup"]["database"] == "kept"
    assert "protected environment" in response["cleanup"]["reason"]
    assert project.server.database_exists(name)
    assert "half_done" not in project.server.tables(name)


def test_a_dry_run_runs_no_script_and_a_sql_dry_run_failure_touches_nothing(project: Project) -> None:
    marker = project.root / "ran"
    project.write_package(
        "bad",
        migrations=[("bad0001", None, f"open({str(marker)!r}, 'w').close()\nraise RuntimeError('no')")],
    )
    name = project.database()
    plain = project.run(database_name=name, dry_run=True)
    assert plain["status"] == "success", plain
    assert plain["result"]["plan"]["scripts_run"] is False
    assert not marker.exists(), "a plain dry run (dbinit plan) must not run any script code"
    response = project.run(database_name=name, dry_run=True, sql=True)
    # Rendering SQL runs upgrade() in offline mode, so the error surfaces there.
    assert marker.exists()
    assert response["status"] == "error", response
    assert response["cleanup"]["database"] == "untouched"
    assert not project.server.database_exists(name)


@pytest.mark.parametrize(
    ("production", "key"),
    [
        ({"if_exists": "recreate"}, "environments.production.if_exists"),
        ({"rebuild": {"cron": "0 3 * * *"}}, "environments.production.rebuild"),
    ],
)
def test_recreate_and_rebuild_are_refused_for_protected_environments_at_load(
    project: Project, production: dict[str, object], key: str
) -> None:
    project.write_config(
        environments={
            "dev": {
                "connection_string_env": TEST_URL_VAR,
                "if_exists": "recreate",
                "rebuild": {"cron": "0 3 * * *"},
            },
            "production": {"connection_string_env": TEST_URL_VAR, **production},
        }
    )
    with pytest.raises(ConfigurationError) as raised:
        load_config(project.config_path)
    assert key in raised.value.message
    assert "protected" in raised.value.message
    rc, response, _ = cli(project, "init", "production")
    assert rc == 1
    assert response["code"] == "configuration_error"
    assert key in response["error"]


def test_recreate_is_refused_for_a_protected_environment_at_run_time(project: Project) -> None:
    name = project.database()
    with project.server.connect() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    rc, response, _ = cli(project, "init", "production", "--database-name", name, "--if-exists", "recreate")
    assert rc == 1
    assert response["stage"] == "validate"
    assert response["code"] == "recreate_refused"
    assert project.server.database_exists(name)

    # The create stage refuses it too, whatever plan reaches it.
    config = project.config()
    plan = build_plan(config, "dev", InitParams(database_name=name, if_exists="recreate"))
    protected = type(plan)(**{**plan.__dict__, "environment": "production", "protected": True})
    server = DatabaseServer(ServerRef("postgresql", project.server.url, f"env:{TEST_URL_VAR}", "postgres"))
    with pytest.raises(InputError) as raised:
        ensure_database(server, protected)
    assert raised.value.code == "recreate_refused"
    assert project.server.database_exists(name)


def test_an_operation_log_that_cannot_be_written_never_fails_the_run(project: Project) -> None:
    project.write_config(integration={"operation_log": "/proc/dbinit-forbidden/operations.jsonl"})
    name = project.database()
    response = project.run(database_name=name)
    assert response["status"] == "success", response
    copy = store(project).operations()
    assert copy[-1]["result"]["run_id"] == response["result"]["run_id"], "the state store keeps the record"
