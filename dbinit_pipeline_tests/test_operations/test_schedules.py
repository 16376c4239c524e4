"""Rebuild schedules: built from `environments.<env>.rebuild`, evaluated with Dagster's own
schedule context, and the run they request executed on a real PostgreSQL. The daemon's real
tick is in test_end_to_end."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from dagster import (
    DagsterInstance,
    DefaultScheduleStatus,
    RunRequest,
    build_schedule_context,
    validate_run_config,
)

from dbinit_pipeline.configuration import EnvironmentSettings, LoadedConfig, ProjectConfig, RebuildSchedule
from dbinit_pipeline.errors import ConfigurationError
from dbinit_pipeline.orchestration.jobs import build_job, build_jobs
from dbinit_pipeline.orchestration.schedules import (
    REBUILD_TAG,
    build_rebuild_schedule,
    build_rebuild_schedules,
    rebuild_run_config,
)
from dbinit_pipeline_tests.conftest import TEST_URL_VAR, Project


def _with_rebuild(
    project: Project, name: str, cron: str = "30 2 * * *", timezone: str = "Europe/Paris"
) -> None:
    project.write_config(
        environments={
            "dev": {
                "connection_string_env": TEST_URL_VAR,
                "database_name": name,
                "rebuild": {"cron": cron, "timezone": timezone},
            },
            "staging": {"connection_string_env": TEST_URL_VAR},
            "production": {"connection_string_env": TEST_URL_VAR, "if_exists": "error"},
        }
    )


def test_a_rebuild_environment_gets_one_schedule_running_by_default(project: Project) -> None:
    _with_rebuild(project, project.database())
    config = project.config()
    schedules = build_rebuild_schedules(config, build_jobs(config))
    assert [s.name for s in schedules] == ["rebuild_dev"]
    schedule = schedules[0]
    assert schedule.job_name == "initialize_dev"
    assert schedule.cron_schedule == "30 2 * * *"
    assert schedule.execution_timezone == "Europe/Paris"
    assert schedule.default_status == DefaultScheduleStatus.RUNNING


def test_the_tick_requests_a_valid_recreate_run_that_rebuilds_the_database(project: Project) -> None:
    name = project.database()
    _with_rebuild(project, name)
    config = project.config()
    job = build_job(config, "dev")
    schedule = build_rebuild_schedule(config, "dev", job)

    tick = datetime(2026, 3, 29, 2, 30, tzinfo=ZoneInfo("Europe/Paris"))
    with DagsterInstance.ephemeral() as instance:
        result = schedule.evaluate_tick(
            build_schedule_context(instance=instance, scheduled_execution_time=tick)
        )
        assert result.run_requests is not None and len(result.run_requests) == 1
        request: RunRequest = result.run_requests[0]
        assert request.run_config == rebuild_run_config()
        assert request.run_config["ops"]["validate"]["config"]["if_exists"] == "recreate"
        assert validate_run_config(job, request.run_config)  # raises if the job would refuse it
        assert request.tags[REBUILD_TAG] == "rebuild"

        assert project.run(database_name=name)["status"] == "success"
        with project.server.connect(name) as conn:
            conn.execute("CREATE TABLE leftover (id int)")
        run = job.execute_in_process(run_config=request.run_config, tags=request.tags, instance=instance)
    response = run.output_for_node("log")
    assert response["status"] == "success", response
    assert response["result"]["database"] == "recreated"
    assert "leftover" not in project.server.tables(name)


def test_a_protected_environment_never_gets_a_rebuild(project: Project) -> None:
    project.write_config(
        environments={
            "dev": {"connection_string_env": TEST_URL_VAR},
            "production": {"connection_string_env": TEST_URL_VAR, "rebuild": {"cron": "0 3 * * *"}},
        }
    )
    with pytest.raises(ConfigurationError, match=r"environments\.production\.rebuild: .*refused"):
        project.config()
    # The schedule module refuses it on its own too, for a configuration that skipped validation.
    project.write_config()
    job = build_job(project.config(), "production")
    unchecked = LoadedConfig(
        ProjectConfig.model_construct(
            project="p",
            environments={
                "production": EnvironmentSettings(
                    connection_string_env=TEST_URL_VAR, rebuild=RebuildSchedule(cron="0 3 * * *")
                )
            },
        ),
        project.config_path,
    )
    with pytest.raises(ConfigurationError, match="refused for the protected environment 'production'"):
        build_rebuild_schedule(unchecked, "production", job)


@pytest.mark.parametrize(
    ("cron", "timezone", "key"),
    [
        ("every night", "UTC", r"environments\.dev\.rebuild\.cron: 'every night'"),
        ("0 3 * * *", "Mars/Olympus_Mons", r"environments\.dev\.rebuild\.timezone: 'Mars/Olympus_Mons'"),
    ],
)
def test_a_bad_cron_or_timezone_names_the_key(project: Project, cron: str, timezone: str, key: str) -> None:
    _with_rebuild(project, "unused_name", cron=cron, timezone=timezone)
    config = project.config()
    with pytest.raises(ConfigurationError, match=key):
        build_rebuild_schedules(config, build_jobs(config))
