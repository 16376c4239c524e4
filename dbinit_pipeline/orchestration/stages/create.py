"""Stage 4, create: the run lock, then the target database exists according to `if_exists`."""

from dagster import OpExecutionContext, op

from dbinit_pipeline.orchestration.resources import OperationLog, ProjectResource, RunLock
from dbinit_pipeline.orchestration.stages.failure import TRANSIENT_RETRY, run_stage
from dbinit_pipeline.pipeline.create import database_ready
from dbinit_pipeline.pipeline.guard import guard_mutation
from dbinit_pipeline.pipeline.results import DatabaseReady, Provisioned


@op(retry_policy=TRANSIENT_RETRY)
def create(
    context: OpExecutionContext,
    provisioned: Provisioned,
    project: ProjectResource,
    operation_log: OperationLog,
    run_lock: RunLock,
) -> DatabaseReady:
    """Take the run lock, then make sure the target database exists (a dry run only says what would happen)."""
    plan = provisioned.plan

    def locked_and_ready() -> DatabaseReady:
        # The lock is held until verify: one initialization per server and database at a time.
        guard_mutation(
            project.load(),
            provisioned,
            run_id=context.run_id,
            recreating=plan.if_exists == "recreate",
        )
        return database_ready(provisioned)

    ready = run_stage(context, "create", operation_log, locked_and_ready, plan=plan)
    context.log.info(f"create: database {plan.database_name} {ready.action}")
    return ready
