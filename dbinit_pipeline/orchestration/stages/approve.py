"""Stage 2, approve: protected environments need a recorded approval bound to the plan."""

from dagster import OpExecutionContext, op

from dbinit_pipeline.orchestration.resources import ApprovalGate, OperationLog
from dbinit_pipeline.orchestration.stages.failure import TRANSIENT_RETRY, run_stage
from dbinit_pipeline.pipeline.results import Approved, InitPlan

SCHEDULE_TAG = "dagster/schedule_name"


@op(retry_policy=TRANSIENT_RETRY)
def approve(
    context: OpExecutionContext,
    plan: InitPlan,
    approval_gate: ApprovalGate,
    operation_log: OperationLog,
) -> Approved:
    """Pass unprotected plans; use the approval of a protected one or fail at once (never wait).

    Retried only when reading the plan's server fails transiently; a missing approval is final.
    """
    scheduled = SCHEDULE_TAG in context.run.tags
    approved = run_stage(
        context,
        "approve",
        operation_log,
        lambda: approval_gate.require(plan, run_id=context.run_id, scheduled=scheduled),
        plan=plan,
    )
    if approved.required and approved.approved_by:
        context.log.info(f"approve: plan {approved.plan_hash} approved by {approved.approved_by}")
    elif approved.required:
        context.log.info(f"approve: dry run of plan {approved.plan_hash}; a real run needs an approval")
    else:
        context.log.info("approve: not required")
    return approved
