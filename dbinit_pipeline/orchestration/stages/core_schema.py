"""Stage 5, core_schema: the core package (auth and workspaces), in one transaction, under a lock."""

from dagster import OpExecutionContext, op

from dbinit_pipeline.migrations.loading import registry_for
from dbinit_pipeline.orchestration.resources import OperationLog, ProjectResource, RunLock
from dbinit_pipeline.orchestration.stages.failure import TRANSIENT_RETRY, run_stage
from dbinit_pipeline.orchestration.stages.schema_progress import progress_logger
from dbinit_pipeline.pipeline.core_schema import guarded_apply
from dbinit_pipeline.pipeline.results import CoreApplied, DatabaseReady


@op(retry_policy=TRANSIENT_RETRY)
def core_schema(
    context: OpExecutionContext,
    database: DatabaseReady,
    project: ProjectResource,
    operation_log: OperationLog,
    run_lock: RunLock,
) -> CoreApplied:
    """Apply the core schema through Alembic."""
    config = project.load()
    report = run_stage(
        context,
        "core_schema",
        operation_log,
        lambda: guarded_apply(
            config,
            database,
            registry_for(config, context.run_id).core_packages(),
            run_id=context.run_id,
            progress=progress_logger(context, "core_schema"),
        ),
        plan=database.plan,
        database=database,
    )
    verb = "would apply" if report.dry_run else "applied"
    count = report.pending if report.dry_run else report.migrations_applied
    context.log.info(f"core_schema: {verb} {count} migration(s)")
    return CoreApplied(database, report)
