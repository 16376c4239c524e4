"""Stage 3, provision: a server answers for this environment (started, found or created)."""

from dagster import OpExecutionContext, op

from dbinit_pipeline.orchestration.resources import OperationLog, Provisioner
from dbinit_pipeline.orchestration.stages.failure import TRANSIENT_RETRY, run_stage
from dbinit_pipeline.pipeline.results import Approved, Provisioned


@op(retry_policy=TRANSIENT_RETRY)
def provision(
    context: OpExecutionContext,
    approved: Approved,
    provisioner: Provisioner,
    operation_log: OperationLog,
) -> Provisioned:
    """Start the embedded server, check a local one, or find/create cloud infrastructure."""
    plan = approved.plan
    found = run_stage(context, "provision", operation_log, lambda: provisioner.provision(plan), plan=plan)
    context.log.info(f"provision: {plan.hosting} server {found.server.url_display} ({found.infrastructure})")
    return Provisioned(approved, found.server, found.infrastructure, found.details)
