"""The code location: assembles jobs, schedules and sensors from the configuration."""

from __future__ import annotations

from dagster import Definitions

from dbinit_pipeline.configuration import load_config
from dbinit_pipeline.jobs import build_jobs


def build_definitions() -> Definitions:
    config = load_config()
    return Definitions(jobs=build_jobs(config))


defs = build_definitions()
