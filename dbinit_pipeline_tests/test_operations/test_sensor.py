"""The run-failure sensor, evaluated on real failed runs (executed in process on a real
PostgreSQL) with a real webhook listener. The daemon-driven path is in test_end_to_end."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from dagster import (
    DagsterEventType,
    DagsterInstance,
    DefaultSensorStatus,
    Failure,
    RunFailureSensorContext,
    SensorDefinition,
    build_run_status_sensor_context,
    job,
    op,
)

from dbinit_pipeline.configuration import LoadedConfig
from dbinit_pipeline.notification import FailedRun
from dbinit_pipeline.orchestration.jobs import build_job
from dbinit_pipeline.orchestration.sensors.run_failure import (
    SENSOR_NAME,
    build_run_failure_sensor,
    describe_failure,
    notification_for,
)
from dbinit_pipeline_tests.conftest import Project
from dbinit_pipeline_tests.test_operations.conftest import WebhookListener, fields_of, free_port


@pytest.fixture
def instance() -> Iterator[DagsterInstance]:
    with DagsterInstance.ephemeral() as ephemeral:
        yield ephemeral


def _notified_project(project: Project, webhook_url: str) -> LoadedConfig:
    project.monkeypatch.setenv("OPS_TEST_WEBHOOK", webhook_url)
    project.write_config(integration={"notifier": {"webhook_url_env": "OPS_TEST_WEBHOOK"}})
    return project.config()


def _failure_context(instance: DagsterInstance, run_id: str) -> RunFailureSensorContext:
    run = instance.get_run_by_id(run_id)
    assert run is not None
    records = instance.get_records_for_run(run_id, of_type=DagsterEventType.RUN_FAILURE).records
    event = records[-1].event_log_entry.dagster_event
    assert event is not None
    return build_run_status_sensor_context(
        sensor_name=SENSOR_NAME, dagster_event=event, dagster_instance=instance, dagster_run=run
    ).for_run_failure()


def _evaluate(sensor: SensorDefinition, context: RunFailureSensorContext) -> None:
    sensor(context)


def test_sensor_watches_all_code_locations_runs_by_default_and_often(project: Project) -> None:
    sensor = build_run_failure_sensor(project.config())
    assert sensor.name == SENSOR_NAME
    assert sensor.default_status == DefaultSensorStatus.RUNNING
    assert sensor.minimum_interval_seconds is not None and sensor.minimum_interval_seconds <= 15
    # monitored_jobs would hide `dagster job execute` runs: the sensor must not be limited to jobs
    assert sensor._monitor_all_code_locations  # type: ignore[attr-defined]
    assert not sensor._monitored_jobs  # type: ignore[attr-defined]


def test_a_failed_run_is_described_and_sent_to_the_webhook(
    project: Project, webhook: WebhookListener, instance: DagsterInstance
) -> None:
    config = _notified_project(project, webhook.url)
    result = build_job(config, "dev").execute_in_process(
        run_config={"ops": {"validate": {"config": {"database_name": "Not A Valid Name!"}}}},
        instance=instance,
        raise_on_error=False,
    )
    assert not result.success
    context = _failure_context(instance, result.run_id)

    failed = describe_failure(context.dagster_run, context.get_step_failure_events(), None)
    assert failed is not None
    assert (failed.environment, failed.job, failed.run_id, failed.stage) == (
        "dev",
        "initialize_dev",
        result.run_id,
        "validate",
    )
    assert "Not A Valid Name!" in failed.error
    assert failed.suggestions

    _evaluate(build_run_failure_sensor(config), context)
    fields = fields_of(webhook.wait_for(lambda m: True, timeout=5))
    assert fields["Run id"] == result.run_id
    assert fields["Failed stage"] == "validate"
    assert fields["Environment"] == "dev"
    assert fields["Error"] == failed.error
    assert fields["Recovery suggestions"] == "\n".join(f"• {s}" for s in failed.suggestions)


@op
def _explode() -> None:
    raise Failure("not a dbinit job")


@job
def _other_project_job() -> None:
    _explode()


def test_runs_of_other_jobs_are_left_alone(
    project: Project, webhook: WebhookListener, instance: DagsterInstance
) -> None:
    config = _notified_project(project, webhook.url)
    result = _other_project_job.execute_in_process(instance=instance, raise_on_error=False)
    context = _failure_context(instance, result.run_id)
    assert describe_failure(context.dagster_run, context.get_step_failure_events(), None) is None
    _evaluate(build_run_failure_sensor(config), context)
    assert webhook.received == []


def test_a_failing_notifier_is_logged_and_never_breaks_the_sensor(
    project: Project,
    instance: DagsterInstance,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = _notified_project(project, f"http://127.0.0.1:{free_port()}/down")
    result = build_job(config, "dev").execute_in_process(
        run_config={"ops": {"validate": {"config": {"database_name": "Not A Valid Name!"}}}},
        instance=instance,
        raise_on_error=False,
    )
    context = _failure_context(instance, result.run_id)
    sensor = build_run_failure_sensor(config)
    with caplog.at_level(logging.WARNING):
        _evaluate(sensor, context)  # the webhook is down: logged, not raised
    assert "not delivered" in caplog.text
    config.path.write_text("project: [unterminated")  # even a configuration that no longer loads
    capsys.readouterr()
    _evaluate(sensor, context)  # the sensor's own log (the tick log in the UI) says why
    assert "the failure notification could not be prepared" in capsys.readouterr().err


def test_a_run_stopped_for_approval_asks_the_approvers(
    project: Project, webhook: WebhookListener, instance: DagsterInstance
) -> None:
    _notified_project(project, webhook.url)
    project.write_config(
        integration={"notifier": {"webhook_url_env": "OPS_TEST_WEBHOOK"}},
        safety={"protected_environments": ["production"], "approvers": {"production": ["alice", "bob"]}},
    )
    config = project.config()
    result = build_job(config, "production").execute_in_process(
        run_config={"ops": {"validate": {"config": {"database_name": project.database()}}}},
        instance=instance,
        raise_on_error=False,
    )
    context = _failure_context(instance, result.run_id)
    waiting = describe_failure(context.dagster_run, context.get_step_failure_events(), None)
    assert waiting is not None and waiting.stage == "approve" and waiting.code == "approval_missing"
    notification = notification_for(waiting, {"production": ["alice", "bob"]})
    assert notification.kind == "approval"
    assert notification.fields["Approvers"] == "alice, bob"
    failed = FailedRun(**{**waiting.__dict__, "stage": "create", "code": "permission_denied"})
    assert notification_for(failed, {"production": ["alice"]}).kind == "failure"
