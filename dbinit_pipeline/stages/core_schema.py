"""Stage 5, core_schema: the core package (auth and workspaces), in one transaction, under a lock."""

from dagster import OpExecutionContext, op

from dbinit_pipeline.configuration import LoadedConfig
from dbinit_pipeline.resources.database_server import DatabaseServer
from dbinit_pipeline.resources.operation_log import OperationLog
from dbinit_pipeline.resources.project import ProjectResource
from dbinit_pipeline.resources.run_lock import RunLock
from dbinit_pipeline.schema.alembic_project import apply_all, refuse_unadopted, with_sql_note
from dbinit_pipeline.schema.loading import registry_for
from dbinit_pipeline.schema.package import Package
from dbinit_pipeline.schema.runner import ApplyReport, MigrationRunner, Progress
from dbinit_pipeline.stages.failure import TRANSIENT_RETRY, run_stage
from dbinit_pipeline.stages.guard import guard_mutation
from dbinit_pipeline.stages.results import CoreApplied, DatabaseReady
from dbinit_pipeline.stages.schema_progress import progress_logger


def apply_packages(
    config: LoadedConfig,
    database: DatabaseReady,
    packages: list[Package],
    *,
    run_id: str = "",
    progress: Progress | None = None,
) -> ApplyReport:
    """Apply (or, in a dry run, plan) `packages` on the run's database; the ledger names `run_id`
    (the run applying them, which in a re-execution is not the run that validated the plan)."""
    plan = database.plan
    approved = database.provisioned.approved
    runner = MigrationRunner(
        DatabaseServer(database.server),
        plan.database_name,
        run_id=run_id or plan.run_id or "manual",
        lock_timeout=config.model.safety.lock_timeout,
        transaction_mode=config.model.packages.transaction,
        progress=progress,
        allowed=frozenset(approved.approved_pending) if approved.required else None,
        statement_timeout_s=config.statement_timeout_s,
    )
    if plan.dry_run:
        if database.exists:
            refuse_unadopted(runner, packages, environment=plan.environment)
        if plan.sql:
            return with_sql_note(runner.plan_sql(packages, database_exists=database.exists), packages)
        return with_sql_note(runner.plan_pending(packages, database_exists=database.exists), packages)
    return apply_all(runner, packages, environment=plan.environment)


def guarded_apply(
    config: LoadedConfig,
    database: DatabaseReady,
    packages: list[Package],
    *,
    run_id: str,
    run_lock: RunLock,
    progress: Progress | None = None,
) -> ApplyReport:
    """`apply_packages` after the checks every mutating stage makes (see stages/guard.py)."""
    guard_mutation(config, database.provisioned, run_id=run_id, run_lock=run_lock)
    return apply_packages(config, database, packages, run_id=run_id, progress=progress)


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
            run_lock=run_lock,
            progress=progress_logger(context, "core_schema"),
        ),
        plan=database.plan,
        database=database,
    )
    verb = "would apply" if report.dry_run else "applied"
    count = report.pending if report.dry_run else report.migrations_applied
    context.log.info(f"core_schema: {verb} {count} migration(s)")
    return CoreApplied(database, report)
