"""`fleet_<env>`: one job that initializes every tenant database of an environment.

fleet_plan -> fleet_tenants (mapped: one step per batch of `fleet.tenants_per_step` tenants) ->
fleet_summary. The tenants are `environments.<env>.fleet.tenants` plus the keys of the Dagster
dynamic partition set `dbinit_tenants_<env>` (an operator or a sensor adds to it), or exactly the
run config's `tenants`. Where templates are on and the server has no template of the plan yet,
the plan step initializes the first tenant alone, so that every other one clones its template.

The steps run on the executor named by `fleet.executor`: Dagster's multiprocess executor (at most
`fleet.concurrency` steps at once), Celery workers (dagster-celery), Kubernetes jobs (dagster-k8s)
or ECS tasks (dagster-aws); whichever it is, `fleet.concurrency` also bounds the tenants that
work at once on the server (fleet.py).
"""

import re
from collections.abc import Iterator
from typing import Any

from dagster import (
    Config,
    DynamicOut,
    DynamicOutput,
    DynamicPartitionsDefinition,
    ExecutorDefinition,
    Failure,
    JobDefinition,
    MetadataValue,
    OpExecutionContext,
    Out,
    Output,
    graph,
    in_process_executor,
    multiprocess_executor,
    op,
)

from dbinit_pipeline.configuration import FleetSettings, LoadedConfig
from dbinit_pipeline.errors import ConfigurationError, describe
from dbinit_pipeline.orchestration.jobs import ENV_TAG
from dbinit_pipeline.orchestration.resources import OperationLog, ProjectResource
from dbinit_pipeline.pipeline.fleet import (
    as_batches,
    first_builds_template,
    fleet_settings,
    fleet_summary,
    initialize_batch,
    initialize_tenant,
    partition_set_name,
    tenant_names,
)

FLEET_TAG = "dbinit/fleet"


class FleetParams(Config):
    """Run parameters: `tenants` replaces the configured and partition-set tenants for this run."""

    tenants: list[str] | None = None


def tenant_partitions(environment: str) -> DynamicPartitionsDefinition:
    """The partition set an operator or a sensor adds tenants to
    (`instance.add_dynamic_partitions(...)`, or a sensor's `dynamic_partitions_requests`)."""
    return DynamicPartitionsDefinition(name=partition_set_name(environment))


def _mapping_key(index: int, batch: list[str]) -> str:
    first = re.sub(r"[^A-Za-z0-9_]", "_", batch[0])[:40] if batch else "none"
    return f"b{index}_{first}"


@op(out={"first": Out(), "batches": DynamicOut()})
def fleet_plan(
    context: OpExecutionContext, config: FleetParams, project: ProjectResource, operation_log: OperationLog
) -> Iterator[Output[Any] | DynamicOutput[Any]]:
    """Decide the tenants; build the first alone when the others can clone its template."""
    loaded = project.load()
    environment = project.environment
    fleet = fleet_settings(loaded, environment)
    if config.tenants is not None:
        tenants = tenant_names(config.tenants, [])
    else:
        added = context.instance.get_dynamic_partitions(partition_set_name(environment))
        tenants = tenant_names(fleet.tenants, added)
    if not tenants:
        raise Failure(
            description=f"The fleet of {environment} has no tenants: environments.{environment}.fleet.tenants "
            f"is empty and nothing was added to the partition set {partition_set_name(environment)}",
            allow_retries=False,
        )
    context.log.info(f"fleet_plan: {len(tenants)} tenant(s): {', '.join(tenants[:20])}")
    first: list[dict[str, Any]] = []
    rest = tenants
    try:
        build_first = len(tenants) > 1 and first_builds_template(loaded, environment, context.run_id)
    except Exception as exc:  # the tenants' own stages report the server's problem, each for itself
        context.log.warning(f"fleet_plan: templates not checked: {describe(exc)}")
        build_first = False
    if build_first:
        context.log.info(f"fleet_plan: {tenants[0]} first, alone: the others clone its template")
        first = [
            initialize_tenant(
                loaded, environment, tenants[0], run_id=context.run_id, record=operation_log.append
            )
        ]
        rest = tenants[1:]
    yield Output(first, "first")
    for index, batch in enumerate(as_batches(rest, fleet.tenants_per_step) or [[]]):
        yield DynamicOutput(batch, output_name="batches", mapping_key=_mapping_key(index, batch))


@op
def fleet_tenants(
    context: OpExecutionContext, batch: list[str], project: ProjectResource, operation_log: OperationLog
) -> list[dict[str, Any]]:
    """Initialize the batch's tenants; a failure is that tenant's response, never a raise."""
    loaded = project.load()
    responses = initialize_batch(
        loaded, project.environment, batch, run_id=context.run_id, record=operation_log.append
    )
    for tenant, response in zip(batch, responses, strict=True):
        if response["status"] == "success":
            context.log.info(f"{tenant}: {response['message']}")
        else:
            context.log.error(f"{tenant}: failed at {response['stage']}: {response['error']}")
    return responses


@op
def fleet_summary_op(
    context: OpExecutionContext,
    first: list[dict[str, Any]],
    results: list[list[dict[str, Any]]],
    project: ProjectResource,
    operation_log: OperationLog,
) -> dict[str, Any]:
    """One response for the fleet; the run fails, naming every failed tenant, if any failed."""
    responses = [*first, *(r for batch in results for r in batch)]
    summary = fleet_summary(project.environment, responses, run_id=context.run_id)
    for problem in operation_log.append(summary):
        context.log.warning(problem)
    context.add_output_metadata({"response": MetadataValue.json(summary)})
    if summary["status"] != "success":
        context.log.error(summary["error"])
        raise Failure(
            description=summary["error"],
            metadata={
                "response": MetadataValue.json(summary),
                "code": summary["code"],
                "stage": "fleet",
                "suggestions": MetadataValue.text("\n".join(summary["recovery"]["suggestions"])),
            },
            allow_retries=False,
        )
    context.log.info(summary["message"])
    return summary


@graph
def fleet() -> None:
    """fleet_plan -> fleet_tenants (one step per batch) -> fleet_summary"""
    first, batches = fleet_plan()
    fleet_summary_op(first, batches.map(fleet_tenants).collect())


def fleet_job_name(environment: str) -> str:
    return f"fleet_{environment}"


def executor_for(environment: str, settings: FleetSettings) -> ExecutorDefinition:
    """The executor `fleet.executor` names; its own settings (broker, namespace, cluster) come
    from the run config's `execution` block."""
    if settings.executor == "multiprocess":
        return multiprocess_executor.configured(
            {"max_concurrent": settings.concurrency}, name="multiprocess_executor"
        )
    if settings.executor == "in_process":
        return in_process_executor
    package, module, attribute = {
        "celery": ("dagster-celery", "dagster_celery", "celery_executor"),
        "k8s": ("dagster-k8s", "dagster_k8s", "k8s_job_executor"),
        "ecs": ("dagster-aws", "dagster_aws.ecs.executor", "ecs_executor"),
    }[settings.executor]
    try:
        imported = __import__(module, fromlist=[attribute])
    except ImportError:
        raise ConfigurationError(
            f"environments.{environment}.fleet.executor is {settings.executor!r}, but {package} is not installed",
            suggestions=[f"pip install '{package}>=0.29,<0.30' (the release that matches dagster 1.13)."],
        ) from None
    executor: ExecutorDefinition = getattr(imported, attribute)
    return executor


def build_fleet_job(config: LoadedConfig, environment: str) -> JobDefinition:
    settings = fleet_settings(config, environment)
    project = ProjectResource(config_path=str(config.path), environment=environment)
    return fleet.to_job(
        name=fleet_job_name(environment),
        description=(
            f"Initialize every tenant database of {environment} ({len(settings.tenants)} configured, plus "
            f"the partition set {partition_set_name(environment)}), {settings.concurrency} at a time, "
            f"on the {settings.executor} executor."
        ),
        tags={ENV_TAG: environment, FLEET_TAG: environment},
        executor_def=executor_for(environment, settings),
        resource_defs={
            "project": project,
            "operation_log": OperationLog(
                project=project, path=str(config.resolve(config.model.integration.operation_log))
            ),
        },
    )


def build_fleet_jobs(config: LoadedConfig) -> list[JobDefinition]:
    """One fleet job per environment that configures `fleet`."""
    return [
        build_fleet_job(config, env) for env, s in config.model.environments.items() if s.fleet is not None
    ]
