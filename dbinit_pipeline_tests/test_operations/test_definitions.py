"""The code location loads from the repository's dbinit.yaml with its sensor and schedules."""

from __future__ import annotations

import pytest

from dbinit_pipeline.configuration import load_config
from dbinit_pipeline.orchestration.definitions import build_definitions
from dbinit_pipeline.orchestration.sensors.run_failure import SENSOR_NAME
from dbinit_pipeline_tests.test_operations.conftest import REPO


def test_repository_definitions_load_with_the_failure_sensor_and_rebuild_schedules(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DBINIT_CONFIG", str(REPO / "dbinit.yaml"))
    config = load_config()
    repository = build_definitions().get_repository_def()
    assert {job.name for job in repository.get_all_jobs()} >= {
        f"initialize_{env}" for env in config.model.environments
    }
    assert [sensor.name for sensor in repository.sensor_defs] == [SENSOR_NAME]
    rebuilt = {env for env, settings in config.model.environments.items() if settings.rebuild}
    assert {s.name for s in repository.schedule_defs} == {f"rebuild_{env}" for env in rebuilt}
