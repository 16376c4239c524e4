"""Stage 6, package_schemas: every registered package, dependencies first, atomically where possible."""

from dagster import OpExecutionContext, op

from dbinit_pipeline.migrations.loading import registry_for
from dbinit_pipeline.orchestration.resources import OperationLog, ProjectResource, RunLock
from dbinit_pipeline.orchestration.stages.failure import TRANSIENT_RETRY, run_stage
from dbinit_pipeline.orchestration.stages.schema_progress import progress_logger
from dbinit_pipeline.pipeline.core_schema import guarded_apply
from dbinit_pipeline.pipeline.results import CoreApplied, PackagesApplied


@op(retry_policy=TRANSIENT_RETRY)
def package_schemas(
    context: OpExecutionContext,
    core: CoreApplied,
    project: ProjectResource,
    operation_log: OperationLog,
    run_lock: RunLock,
) -> PackagesApplied:
    """Apply the pending migrations of every package in dependency order."""
    config = project.load()
    report = run_stage(
        context,
        "package_schemas",
        operation_log,
        lambda: guarded_apply(
            config,
            core.database,
            registry_for(config, context.run_id).packages(),
            run_id=context.run_id,
            progress=progress_logger(context, "package_schemas"),
        ),
        plan=core.plan,
        database=core.database,
    )
    names = ", ".join(p.name for p in report.packages) or "none"
    verb = "would apply" if report.dry_run else "applied"
    count = report.pending if report.dry_run else report.migrations_applied
    context.log.info(f"package_schemas: {verb} {count} migration(s); packages: {names}")
    if report.note:
        context.log.warning(f"package_schemas: {report.note}")
    return PackagesApplied(core, report)
