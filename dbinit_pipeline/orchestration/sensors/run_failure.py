"""The run-failure sensor: every failed dbinit run becomes a notification.

It watches every code location of the instance (`monitor_all_code_locations`), because a sensor
limited with `monitored_jobs` never sees runs started by `dagster job execute`; runs without the
`dbinit/env` tag (other projects' jobs) are skipped. A run stopped at the approve stage becomes an
approval request to the environment's approvers, through the same notifier, unless the approval
gate has already sent one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from dagster import (
    DagsterEvent,
    DagsterRun,
    DefaultSensorStatus,
    RunFailureSensorContext,
    SensorDefinition,
    run_failure_sensor,
)

from dbinit_pipeline.configuration import LoadedConfig, load_cached
from dbinit_pipeline.errors import APPROVAL_REFUSALS
from dbinit_pipeline.notification import (
    FailedRun,
    Notification,
    approval_request,
    failure_notification,
    notifier_from_config,
)
from dbinit_pipeline.orchestration.jobs import ENV_TAG
from dbinit_pipeline.redaction import redact

SENSOR_NAME = "notify_on_run_failure"
# The daemon adds its own loop delay to this minimum between two evaluations of the sensor.
MINIMUM_INTERVAL_SECONDS = 5


def _response_of(event: DagsterEvent) -> dict[str, Any] | None:
    """The seed's error response that `run_stage` attached to a step failure, if any."""
    data = event.step_failure_data
    user = data.user_failure_data if data else None
    if user is None:
        return None
    entry = user.metadata.get("response")
    value = getattr(entry, "value", None)
    return value if isinstance(value, dict) else None


def describe_failure(
    run: DagsterRun,
    step_failures: Sequence[DagsterEvent],
    run_failure_message: str | None,
) -> FailedRun | None:
    """What went wrong in `run`, or None when the run is not a dbinit run."""
    environment = run.tags.get(ENV_TAG)
    if not environment:
        return None
    for event in step_failures:
        response = _response_of(event)
        if response is not None:
            suggestions = response.get("recovery", {}).get("suggestions", [])
            details = response.get("details") or {}
            return FailedRun(
                environment=environment,
                job=run.job_name,
                run_id=run.run_id,
                stage=str(response.get("stage") or event.step_key or "run"),
                error=redact(str(response.get("error") or "the stage failed")),
                suggestions=tuple(redact(str(s)) for s in suggestions),
                code=response.get("code"),
                database=response.get("database_name"),
                approvers_notified=details.get("approvers_notified") is True,
                tenants=tuple(str(t) for t in details.get("failed_tenants", ())),
            )
    # A failure that did not go through run_stage: an unexpected error, or the run never started.
    first = step_failures[0] if step_failures else None
    error = None
    if first is not None and first.step_failure_data and first.step_failure_data.error:
        error = first.step_failure_data.error.message.strip()
    return FailedRun(
        environment=environment,
        job=run.job_name,
        run_id=run.run_id,
        stage=(first.step_key if first and first.step_key else "run"),
        error=redact(error or run_failure_message or "the run failed"),
        suggestions=(
            "Open the run in the Dagster UI and read the failed step's logs.",
            "Fix the cause, then re-execute the run from failure.",
        ),
    )


def notification_for(failed: FailedRun, approvers: Mapping[str, Sequence[str]]) -> Notification:
    """An approval request for a run stopped by the approval gate, a failure report otherwise."""
    if failed.stage == "approve" and failed.code in APPROVAL_REFUSALS:
        return approval_request(failed, approvers.get(failed.environment, ()))
    return failure_notification(failed)


def build_run_failure_sensor(config: LoadedConfig) -> SensorDefinition:
    """The sensor that notifies on every failed dbinit run, running by default."""
    config_path = str(config.path)

    @run_failure_sensor(
        name=SENSOR_NAME,
        description=(
            "Sends a notification (webhook, SNS) for every failed dbinit run, including runs "
            "started by `dagster job execute`; approval failures become approval requests."
        ),
        monitor_all_code_locations=True,
        default_status=DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=MINIMUM_INTERVAL_SECONDS,
    )
    def notify_on_run_failure(context: RunFailureSensorContext) -> None:
        # Whatever happens here is logged, never raised: a raised error would fail the tick and
        # hold back the notifications of every later failure.
        try:
            failed = describe_failure(
                context.dagster_run,
                context.get_step_failure_events(),
                context.failure_event.message,
            )
            if failed is None:
                return
            if failed.approvers_notified:
                context.log.info(
                    f"{failed.job} run {failed.run_id} waits for an approval; the approval gate "
                    "already asked the approvers"
                )
                return
            loaded = load_cached(config_path)
            notifier = notifier_from_config(loaded)
            if not notifier.configured:
                context.log.info(
                    f"{failed.job} run {failed.run_id} failed at {failed.stage}; no notifier is "
                    f"configured (set ${notifier.webhook_env} or integration.notifier.sns_topic_arn)"
                )
                return
            notification = notification_for(failed, loaded.model.safety.approvers)
            errors = notifier.send(notification)
            for error in errors:
                context.log.warning(f"notification for run {failed.run_id} not delivered: {error}")
            if not errors:
                context.log.info(
                    f"notified {', '.join(notifier.channels)}: {notification.title} (run {failed.run_id})"
                )
        except Exception as exc:
            context.log.exception(redact(f"the failure notification could not be prepared: {exc}"))

    return notify_on_run_failure
