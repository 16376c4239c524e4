"""Stage 5, core_schema (and 6, package_schemas): apply packages on the run's database after the guard."""

from dbinit_pipeline.configuration import LoadedConfig
from dbinit_pipeline.database.server import DatabaseServer
from dbinit_pipeline.migrations.alembic_project import apply_all, refuse_unadopted, with_sql_note
from dbinit_pipeline.migrations.package import Package
from dbinit_pipeline.migrations.runner import ApplyReport, MigrationRunner, Progress
from dbinit_pipeline.pipeline.guard import guard_mutation
from dbinit_pipeline.pipeline.results import DatabaseReady


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
    progress: Progress | None = None,
) -> ApplyReport:
    """`apply_packages` after the checks every mutating stage makes (see pipeline/guard.py)."""
    guard_mutation(config, database.provisioned, run_id=run_id)
    return apply_packages(config, database, packages, run_id=run_id, progress=progress)
