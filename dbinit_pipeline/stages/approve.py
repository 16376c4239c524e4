"""Stage 2, approve: protected environments need a recorded approval bound to the plan."""

from dagster import OpExecutionContext, op

from dbinit_pipeline.resources.approval_gate import ApprovalGate
from dbinit_pipeline.resources.operation_log import OperationLog
from dbinit_pipeline.stages.failure import run_stage
from dbinit_pipeline.stages.results import Approved, InitPlan


@op
def approve(
    context: OpExecutionContext,
    plan: InitPlan,
    approval_gate: ApprovalGate,
    operation_log: OperationLog,
) -> Approved:
    """Pass unprotected plans; find the approval of a protected one or fail at once (never wait)."""
    approved = run_stage(context, "approve", operation_log, lambda: approval_gate.require(plan), plan=plan)
    context.log.info(
        f"approve: approved by {approved.approved_by}" if approved.required else "approve: not required"
    )
    return approved
