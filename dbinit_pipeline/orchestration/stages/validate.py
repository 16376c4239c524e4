"""Stage 1, validate: parameters, configuration, environment, connection variable, name, packages."""

from dagster import Config, OpExecutionContext, op

from dbinit_pipeline.fastpath.heap import settle
from dbinit_pipeline.orchestration.resources import OperationLog, ProjectResource
from dbinit_pipeline.orchestration.stages.failure import TRANSIENT_RETRY, run_stage
from dbinit_pipeline.pipeline.results import InitPlan
from dbinit_pipeline.pipeline.validate import InitParams, build_plan


class InitConfig(Config):
    """Run parameters: anything left unset comes from dbinit.yaml."""

    database_name: str | None = None
    if_exists: str | None = None
    dry_run: bool = False
    sql: bool = False  # with dry_run: render each pending script's SQL (runs it in Alembic's offline mode)

    def params(self) -> InitParams:
        return InitParams(
            database_name=self.database_name, if_exists=self.if_exists, dry_run=self.dry_run, sql=self.sql
        )


@op(retry_policy=TRANSIENT_RETRY)
def validate(
    context: OpExecutionContext,
    config: InitConfig,
    project: ProjectResource,
    operation_log: OperationLog,
) -> InitPlan:
    """Check parameters and configuration; decide the database name and the package order."""
    settle()  # the imports and definitions: alive until the process ends
    plan = run_stage(
        context,
        "validate",
        operation_log,
        lambda: build_plan(project.load(), project.environment, config.params(), run_id=context.run_id),
        environment=project.environment,
    )
    settle()  # the run's registry, kept for its other stages
    context.log.info(
        f"validate: environment {plan.environment}, database {plan.database_name}, hosting "
        f"{plan.hosting}, packages in order: {', '.join(plan.package_order)}"
    )
    return plan
