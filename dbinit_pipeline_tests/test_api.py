"""The public Python API returns what the `dbinit` command prints and raises one exception type."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

import dbinit_pipeline
from dbinit_pipeline import DbinitError, ErrorCode
from dbinit_pipeline_tests.conftest import TEST_URL_VAR, Project
from dbinit_pipeline_tests.support.cli import DBINIT


def _cli(project: Project, *args: str) -> tuple[int, dict[str, object]]:
    done = subprocess.run(
        [str(DBINIT), "--config", str(project.config_path), *args],
        capture_output=True,
        text=True,
        env={**os.environ, TEST_URL_VAR: project.server.url},
        timeout=240,
    )
    return done.returncode, json.loads(done.stdout)


def _crm(project: Project) -> None:
    project.write_package(
        "crm",
        migrations=[
            ("crm0001", None, "op.create_table('contacts', sa.Column('id', sa.Integer, primary_key=True))")
        ],
    )


def test_initialize_plan_status_and_health_return_the_documents_the_command_prints(project: Project) -> None:
    _crm(project)
    name = project.database()
    planned = dbinit_pipeline.plan("dev", config=project.config_path, database_name=name)
    assert planned["status"] == "success" and planned["result"]["dry_run"] is True
    assert not project.server.database_exists(name)
    done = dbinit_pipeline.initialize("dev", config=project.config_path, database_name=name)
    assert done["status"] == "success"
    assert done["result"]["database"] == "created" and done["result"]["migrations_applied"] == 3
    status = dbinit_pipeline.status("dev", config=project.config_path, database_name=name)
    code, printed = _cli(project, "status", "dev", "--database-name", name)
    assert code == 0 and printed == json.loads(json.dumps(status))
    assert status["result"]["pending"] == 0 and status["result"]["applied"] == 3
    health = dbinit_pipeline.health("dev", config=str(project.config_path), database_name=name)
    assert health["status"] == "healthy"
    again = dbinit_pipeline.initialize("dev", config=project.config(), database_name=name)
    assert again["result"]["migrations_applied"] == 0


def test_a_failed_stage_raises_dbinit_error_carrying_the_commands_error_document(project: Project) -> None:
    project.write_package("crm", migrations=[("crm0001", None, "op.execute('SELECT no_such_function()')")])
    name = project.database()
    with pytest.raises(DbinitError) as caught:
        dbinit_pipeline.initialize("dev", config=project.config_path, database_name=name)
    error = caught.value
    assert error.code is ErrorCode.MIGRATION_FAILED and error.code == "migration_failed"
    assert error.response is not None and error.response["stage"] == "package_schemas"
    assert error.response["code"] == "migration_failed" and "no_such_function" in error.message
    assert error.response["cleanup"]["database"] == "dropped"
    code, printed = _cli(project, "init", "dev", "--database-name", project.database())
    assert code == 1 and printed["code"] == error.response["code"] and printed["stage"] == "package_schemas"


def test_bad_input_raises_before_any_stage_with_the_code_typed(project: Project) -> None:
    with pytest.raises(DbinitError) as unknown:
        dbinit_pipeline.status("nosuchenv", config=project.config_path)
    assert unknown.value.code is ErrorCode.UNKNOWN_ENVIRONMENT
    assert unknown.value.response is not None and unknown.value.response["operation"] == "status"
    with pytest.raises(DbinitError) as refused:
        dbinit_pipeline.initialize("production", config=project.config_path, if_exists="recreate")
    assert refused.value.code is ErrorCode.RECREATE_REFUSED
    assert "'recreate' is refused for the protected environment 'production'" in refused.value.message


def test_a_protected_environment_without_approval_raises_the_approval_code(project: Project) -> None:
    project.write_config(
        safety={"protected_environments": ["production"], "approvers": {"production": ["alice"]}}
    )
    with pytest.raises(DbinitError) as caught:
        dbinit_pipeline.initialize("production", config=project.config_path, database_name=project.database())
    assert caught.value.code is ErrorCode.APPROVAL_MISSING
    assert any("dbinit approve production" in s for s in caught.value.suggestions)
