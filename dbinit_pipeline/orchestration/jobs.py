"""The graph of the eight stages, and one job per configured environment."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from dagster import (
    ConfigurableResource,
    DagsterInstance,
    InitResourceContext,
    JobDefinition,
    ResourceDefinition,
    graph,
    in_process_executor,
    resource,
)

from dbinit_pipeline.configuration import LoadedConfig
from dbinit_pipeline.errors import DbinitError, ErrorCode
from dbinit_pipeline.orchestration.resources import (
    ApprovalGate,
    OperationLog,
    ProjectResource,
    RunLock,
    provisioner_for,
)
from dbinit_pipeline.orchestration.stages.approve import approve
from dbinit_pipeline.orchestration.stages.core_schema import core_schema
from dbinit_pipeline.orchestration.stages.create import create
from dbinit_pipeline.orchestration.stages.log import log
from dbinit_pipeline.orchestration.stages.package_schemas import package_schemas
from dbinit_pipeline.orchestration.stages.provision import provision
from dbinit_pipeline.orchestration.stages.validate import validate
from dbinit_pipeline.orchestration.stages.verify import verify
from dbinit_pipeline.pipeline.responses import error_response

ENV_TAG = "dbinit/env"


@graph
def initialize() -> None:
    """validate -> approve -> provision -> create -> core_schema -> package_schemas -> verify -> log"""
    log(verify(package_schemas(core_schema(create(provision(approve(validate())))))))


def fixed(bound: ConfigurableResource) -> ResourceDefinition:  # type: ignore[type-arg]
    """`bound` as a resource whose configuration is set when the job is built.

    Its config schema is empty, so run config (the Launchpad's included) that names it is refused
    by Dagster before the run starts: what a run may touch comes from dbinit.yaml and the
    environment only. Setup and teardown still run as for any ConfigurableResource.
    """

    @resource(config_schema={}, description=f"{type(bound).__name__}, fixed by dbinit.yaml")
    def _fixed(context: InitResourceContext) -> Iterator[Any]:
        with bound.yield_for_execution(context) as value:
            yield value

    return _fixed


def job_name(environment: str) -> str:
    return f"initialize_{environment}"


def build_job(config: LoadedConfig, environment: str) -> JobDefinition:
    """`initialize_<env>`, bound to that environment's resources, run in one process."""
    project = ProjectResource(config_path=str(config.path), environment=environment)
    hosting = config.hosting(environment)
    return initialize.to_job(
        name=job_name(environment),
        description=(
            f"Initialize the {environment} database ({config.model.database.provider}, {hosting}) "
            f"of project {config.model.project}: the eight stages in order."
        ),
        tags={ENV_TAG: environment},
        executor_def=in_process_executor,
        resource_defs={
            "project": fixed(project),
            "approval_gate": fixed(ApprovalGate(project=project)),
            "provisioner": fixed(provisioner_for(hosting, project)),
            "operation_log": fixed(
                OperationLog(
                    project=project, path=str(config.resolve(config.model.integration.operation_log))
                )
            ),
            "run_lock": fixed(RunLock(project=project)),
        },
    )


def build_jobs(config: LoadedConfig) -> list[JobDefinition]:
    return [build_job(config, env) for env in config.model.environments]


def run_in_process(
    config: LoadedConfig,
    environment: str,
    *,
    database_name: str | None = None,
    if_exists: str | None = None,
    dry_run: bool = False,
    sql: bool = False,
    verbose: bool = False,
    dagster_home: str | None = None,
) -> dict[str, Any]:
    """Run `initialize_<env>` in this process and return its response, success or error.

    A dry run reads the ledger and the files' checksums and imports no script; with `sql` it
    also renders each pending script's SQL, which runs the scripts' code in Alembic's offline
    mode (as `alembic upgrade --sql` does). The run is recorded in the instance of `dagster_home`
    when given, in an ephemeral instance otherwise."""
    config.environment(environment)
    job = build_job(config, environment)
    params: dict[str, Any] = {"dry_run": dry_run or sql, "sql": sql}
    if database_name is not None:
        params["database_name"] = database_name
    if if_exists is not None:
        params["if_exists"] = if_exists
    run_config = {
        "ops": {"validate": {"config": params}},
        "loggers": {"console": {"config": {"log_level": "DEBUG" if verbose else "INFO"}}},
    }
    instance = DagsterInstance.get() if dagster_home else DagsterInstance.ephemeral()
    with instance:
        result = job.execute_in_process(run_config=run_config, instance=instance, raise_on_error=False)
    if result.success:
        response: dict[str, Any] = result.output_for_node("log")
        return response
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data.user_failure_data:
            metadata = event.step_failure_data.user_failure_data.metadata
            if "response" in metadata:
                value: dict[str, Any] = metadata["response"].value  # type: ignore[assignment]
                return value
    failed = next((e for e in result.all_events if e.is_step_failure), None)
    message = (
        failed.step_failure_data.error.message if failed and failed.step_failure_data.error else "run failed"
    )
    return error_response(
        DbinitError(message, code=ErrorCode.INTERNAL_ERROR),
        stage=failed.step_key if failed and failed.step_key else "run",
        environment=environment,
        run_id=result.run_id,
    )
