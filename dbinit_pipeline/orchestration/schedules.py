"""Rebuild schedules: `environments.<env>.rebuild: {cron, timezone}` in dbinit.yaml.

Each becomes a schedule, running by default, that launches `initialize_<env>` with
`if_exists: recreate`: a throw-away environment dropped and built again from nothing. A
protected environment never gets one (the configuration refuses it on load; this module refuses
it again for callers that build schedules themselves).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dagster import DefaultScheduleStatus, JobDefinition, ScheduleDefinition
from dagster._utils.schedules import is_valid_cron_string

from dbinit_pipeline.configuration import LoadedConfig
from dbinit_pipeline.errors import ConfigurationError, ErrorCode
from dbinit_pipeline.orchestration.jobs import job_name

REBUILD_TAG = "dbinit/trigger"


def schedule_name(environment: str) -> str:
    return f"rebuild_{environment}"


def rebuild_run_config() -> dict[str, Any]:
    """The run configuration of a rebuild: drop the database if it exists, then initialize it."""
    return {"ops": {"validate": {"config": {"if_exists": "recreate"}}}}


def build_rebuild_schedule(config: LoadedConfig, environment: str, job: JobDefinition) -> ScheduleDefinition:
    """The rebuild schedule of one environment; refuses protected or unscheduled environments."""
    key = f"environments.{environment}.rebuild"
    rebuild = config.environment(environment).rebuild
    if rebuild is None:
        raise ConfigurationError(
            f"{key} is not set in {config.path}",
            suggestions=[f"Add {key}: {{cron: '0 3 * * *', timezone: UTC}} to schedule a rebuild."],
        )
    if config.is_protected(environment):
        raise ConfigurationError(
            f"{key}: rebuild schedules are refused for the protected environment {environment!r}",
            code=ErrorCode.RECREATE_REFUSED,
            suggestions=[f"Remove {key} from {config.path}."],
        )
    if not is_valid_cron_string(rebuild.cron):
        raise ConfigurationError(
            f"{key}.cron: {rebuild.cron!r} is not a cron expression ({config.path})",
            suggestions=["Use five fields: minute hour day-of-month month day-of-week, e.g. '0 3 * * *'."],
        )
    try:
        ZoneInfo(rebuild.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigurationError(
            f"{key}.timezone: {rebuild.timezone!r} is not an IANA time zone ({config.path})",
            suggestions=["Use a name such as UTC, Europe/Paris or America/New_York."],
        ) from None
    return ScheduleDefinition(
        name=schedule_name(environment),
        cron_schedule=rebuild.cron,
        execution_timezone=rebuild.timezone,
        job=job,
        run_config=rebuild_run_config(),
        tags={REBUILD_TAG: "rebuild"},
        default_status=DefaultScheduleStatus.RUNNING,
        description=(
            f"Rebuild {environment} from nothing ({rebuild.cron}, {rebuild.timezone}): "
            f"{job.name} with if_exists: recreate."
        ),
    )


def build_rebuild_schedules(config: LoadedConfig, jobs: Sequence[JobDefinition]) -> list[ScheduleDefinition]:
    """One schedule per environment that configures `rebuild`."""
    by_name: Mapping[str, JobDefinition] = {job.name: job for job in jobs}
    return [
        build_rebuild_schedule(config, environment, by_name[job_name(environment)])
        for environment, settings in config.model.environments.items()
        if settings.rebuild is not None
    ]
