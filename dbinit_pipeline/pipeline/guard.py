"""What every mutating stage checks first, in any run or re-execution of a run.

A re-execution from failure skips the stages that succeeded before and takes their outputs
from the parent run: the plan validate fixed, and the approval approve found. So each stage
that writes (create, core_schema, package_schemas) checks again, itself: the files are those
the plan was pinned to, this run holds the run lock, and the database is not protected by
another environment. The runner then refuses any pending revision outside the approval.
"""

from __future__ import annotations

from dbinit_pipeline.configuration import LoadedConfig
from dbinit_pipeline.database.server import DatabaseServer
from dbinit_pipeline.errors import ApprovalError, ErrorCode
from dbinit_pipeline.migrations.loading import registry_for
from dbinit_pipeline.pipeline.results import InitPlan, Provisioned
from dbinit_pipeline.safety.approval import command_for
from dbinit_pipeline.safety.pinned import changes, pin_registry
from dbinit_pipeline.safety.protection import read_mark, refuse_if_protected
from dbinit_pipeline.safety.run_lock import take_run_lock


def refuse_changed_sources(config: LoadedConfig, plan: InitPlan, *, run_id: str) -> None:
    """Raise `plan_changed` when the package files differ from those validate pinned."""
    if plan.pinned is None:
        return
    found = changes(plan.pinned, pin_registry(registry_for(config, run_id)))
    if not found:
        return
    if plan.needs_approval:
        fix = [
            f"Review the new plan: dbinit plan {plan.environment}",
            f"Have it approved: {command_for(config, plan, 'approve')}",
        ]
    else:
        fix = [f"Review the new plan: dbinit plan {plan.environment}"]
    raise ApprovalError(
        f"The package files changed since run {plan.run_id or '?'} validated its plan: "
        + "; ".join(found)
        + ". This run applies nothing it did not validate",
        code=ErrorCode.PLAN_CHANGED,
        suggestions=[
            *fix,
            f"Then launch a new run (dbinit init {plan.environment}, or Launch Run in the UI): "
            "re-executing from failure keeps the old plan.",
        ],
        details={"changes": found, "validated_in_run": plan.run_id},
    )


def guard_mutation(
    config: LoadedConfig,
    provisioned: Provisioned,
    *,
    run_id: str,
    recreating: bool = False,
) -> None:
    """Before a stage writes: pinned files, the run lock, and the database's protection mark.

    A dry run takes no lock but is refused the same way, so that `dbinit plan` shows it.
    """
    plan = provisioned.plan
    refuse_changed_sources(config, plan, run_id=run_id)
    if provisioned.infrastructure == "would_provision":
        return
    take_run_lock(config, provisioned, run_id=run_id)  # none in a dry run; idempotent per run
    refuse_protected_target(provisioned, recreating=recreating)


def refuse_protected_target(provisioned: Provisioned, *, recreating: bool = False) -> None:
    """Refuse a database marked by a protected environment to a run without its approval."""
    plan = provisioned.plan
    approved = provisioned.approved
    refuse_if_protected(
        read_mark(DatabaseServer(provisioned.server), plan.database_name),
        database=plan.database_name,
        environment=plan.environment,
        recreate=recreating,
        # a dry run of an environment that needs approval shows the plan a real run would need approved
        approved=approved.approved_by is not None or (plan.dry_run and plan.needs_approval),
    )
