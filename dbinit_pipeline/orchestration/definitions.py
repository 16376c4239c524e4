"""The code location: assembles jobs, schedules and sensors from the configuration."""

from __future__ import annotations

from dagster import Definitions

from dbinit_pipeline.configuration import load_config
from dbinit_pipeline.orchestration.fleet_job import build_fleet_jobs
from dbinit_pipeline.orchestration.jobs import build_jobs
from dbinit_pipeline.orchestration.schedules import build_rebuild_schedules
from dbinit_pipeline.orchestration.sensors import build_run_failure_sensor


def build_definitions() -> Definitions:
    config = load_config()
    jobs = build_jobs(config)
    fleets = build_fleet_jobs(config)
    return Definitions(
        jobs=[*jobs, *fleets],
        schedules=build_rebuild_schedules(config, jobs),
        sensors=[build_run_failure_sensor(config)],
    )


defs = build_definitions()
