"""Stage 5, core_schema: the core package (auth and workspaces), in one transaction, under a lock."""

from dagster import OpExecutionContext, op

from dbinit_pipeline.configuration import LoadedConfig
from dbinit_pipeline.resources.database_server import DatabaseServer
from dbinit_pipeline.resources.operation_log import OperationLog
from dbinit_pipeline.resources.project import ProjectResource
from dbinit_pipeline.schema.loading import registry_for
from dbinit_pipeline.schema.package import Package
from dbinit_pipeline.schema.runner import ApplyReport, MigrationRunner, Progress
from dbinit_pipeline.stages.failure import TRANSIENT_RETRY, run_stage
from dbinit_pipeline.stages.results import CoreApplied, DatabaseReady
from dbinit_pipeline.stages.schema_progress import progress_logger


def apply_packages(
    config: LoadedConfig,
    database: DatabaseReady,
    packages: list[Package],
    *,
    progress: Progress | None = None,
) -> ApplyReport:
    """Apply (or, in a dry run, plan) `packages` on the run's database."""
    plan = database.plan
    runner = MigrationRunner(
        DatabaseServer(database.server),
        plan.database_name,
        run_id=plan.run_id or "manual",
        lock_timeout=config.model.safety.lock_timeout,
        transaction_mode=config.model.packages.transaction,
        progress=progress,
    )
    if plan.dry_run:
        return runner.plan_sql(packages, database_exists=database.exists)
    return runner.apply(packages)


@op(retry_policy=TRANSIENT_RETRY)
def core_schema(
    context: OpExecutionContext,
    database: DatabaseReady,
    project: ProjectResource,
    operation_log: OperationLog,
) -> CoreApplied:
    """Apply the core schema through Alembic."""
    config = project.load()
    report = run_stage(
        context,
        "core_schema",
        operation_log,
        lambda: apply_packages(
            config,
            database,
            [registry_for(config, context.run_id).core],
            progress=progress_logger(context, "core_schema"),
        ),
        plan=database.plan,
        database=database,
    )
    verb = "would apply" if report.dry_run else "applied"
    count = report.pending if report.dry_run else report.migrations_applied
    context.log.info(f"core_schema: {verb} {count} migration(s)")
    return CoreApplied(database, report)
