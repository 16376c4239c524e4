"""The approval gate for protected environments: default deny, never waits inside a run."""

from __future__ import annotations

from dagster import ConfigurableResource

from dbinit_pipeline.errors import ApprovalError
from dbinit_pipeline.stages.results import Approved, InitPlan


class ApprovalGate(ConfigurableResource):  # type: ignore[type-arg]
    """Decides whether a plan may proceed."""

    config_path: str

    def require(self, plan: InitPlan) -> Approved:
        """Pass plans that need no approval; refuse the others with the command that approves them."""
        if not plan.needs_approval:
            return Approved(plan=plan, required=False)
        raise ApprovalError(
            f"Environment {plan.environment!r} is protected: initializing database "
            f"{plan.database_name!r} requires a recorded approval, and none was found",
            suggestions=[
                f"Ask an approver of {plan.environment!r} to approve the plan "
                f"(dbinit approve {plan.environment} --by NAME), then re-execute the run.",
                "Or initialize an unprotected environment instead.",
            ],
        )
