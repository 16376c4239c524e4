"""Stage 7, verify: the live schema matches what the core and packages declare, and it is healthy."""

from dagster import OpExecutionContext, op

from dbinit_pipeline.orchestration.resources import OperationLog, ProjectResource, RunLock
from dbinit_pipeline.orchestration.stages.failure import TRANSIENT_RETRY, run_stage
from dbinit_pipeline.pipeline.guard import guard_mutation
from dbinit_pipeline.pipeline.results import PackagesApplied, Verified
from dbinit_pipeline.pipeline.verify import verify_applied


@op(retry_policy=TRANSIENT_RETRY)
def verify(
    context: OpExecutionContext,
    applied: PackagesApplied,
    project: ProjectResource,
    operation_log: OperationLog,
    run_lock: RunLock,
) -> Verified:
    """Compare the live schema with the expected one and run the health checks."""
    config = project.load()

    def guarded() -> Verified:
        # verify records snapshots: like every stage that writes, it checks first (stages/guard.py)
        guard_mutation(config, applied.database.provisioned, run_id=context.run_id)
        return verify_applied(config, applied)

    verified = run_stage(
        context,
        "verify",
        operation_log,
        guarded,
        plan=applied.plan,
        database=applied.database,
    )
    run_lock.release(run_id=context.run_id)  # taken by create; a failure above released it already
    context.log.info(f"verify: {verified.status}")
    return verified
