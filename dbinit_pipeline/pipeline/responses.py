"""The seed's JSON responses: one shape for success, one for errors."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dbinit_pipeline.clock import stamp
from dbinit_pipeline.redaction import redact

if TYPE_CHECKING:
    from dbinit_pipeline.errors import DbinitError
    from dbinit_pipeline.pipeline.results import InitPlan, Verified

OPERATION = "initialize-database"


def _now() -> str:
    return stamp()


def success_response(verified: Verified, *, run_id: str) -> dict[str, Any]:
    """The success response for a finished run (or a finished dry run)."""
    applied = verified.packages
    plan = verified.plan
    core, packages = applied.core.report, applied.report
    database = applied.database
    outcomes = [o.as_dict() for o in (*core.packages, *packages.packages)]
    migrations = core.migrations_applied + packages.migrations_applied
    approved = database.provisioned.approved
    result: dict[str, Any] = {
        "environment": plan.environment,
        "database_name": plan.database_name,
        "provider": plan.provider,
        "hosting": plan.hosting,
        "server": database.server.url_display,
        "infrastructure": database.provisioned.infrastructure,
        "infrastructure_details": database.provisioned.details,
        "database": database.action,
        "approval": (
            {"required": True, "approved_by": approved.approved_by, "approval_id": approved.approval_id}
            if approved.required
            else {"required": False}
        ),
        "plan_hash": approved.plan_hash,
        "schema_initialized": not plan.dry_run,
        "migration_table_created": core.ledger_created,
        "packages_applied": outcomes,
        "migrations_applied": migrations,
        "transaction": {"core": core.transaction, "packages": packages.transaction},
        "connectivity": verified.health.get("connectivity", {}).get("status", "skipped"),
        "health_check": "passed" if verified.status == "healthy" else verified.status,
        "health": verified.health,
        "schema": verified.schema,
        "dry_run": plan.dry_run,
        "run_id": run_id,
        "timestamp": _now(),
    }
    notes = [n for n in (core.note, packages.note) if n]
    template = template_result(verified)
    if template:
        result["template"] = template
        notes.extend(str(t["note"]) for t in template.values() if t.get("note"))
    if notes:
        result["notes"] = notes
    if plan.dry_run:
        pending = core.pending + packages.pending
        result["plan"] = {
            "hash": approved.plan_hash,
            "pending_migrations": pending,
            "pending": [o for o in outcomes if o["revisions"]],
        }
        if plan.sql:
            result["plan"]["sql"] = {**core.sql, **packages.sql}
            result["plan"]["sql_rendering"] = (
                "each pending script's upgrade() ran in Alembic's offline mode (as alembic upgrade "
                "--sql does): the scripts' Python code ran; their SQL was not sent to the server"
            )
        else:
            result["plan"]["scripts_run"] = False
        message = (
            f"Dry run for {plan.database_name}: {pending} migration(s) would be applied; nothing was changed"
            if pending
            else f"Dry run for {plan.database_name}: nothing to apply; nothing was changed"
        )
        next_steps = [f"Apply it: dbinit init {plan.environment}"]
        if approved.required:
            result["plan"]["approval_required"] = True
            next_steps.insert(0, f"Have plan {approved.plan_hash} approved: {approved.approve_command}")
    elif database.template is not None and database.template.cloned:
        message = (
            f"Database {plan.database_name} {database.template.note} (no statement replayed) and verified"
        )
        next_steps = [f"Check it any time: dbinit status {plan.environment}"]
    elif migrations == 0 and database.action == "existing":
        message = f"Database {plan.database_name} is already up to date: nothing to apply"
        next_steps = [f"Check it any time: dbinit status {plan.environment}"]
    else:
        message = (
            f"Database {plan.database_name} initialized successfully: "
            f"{migrations} migration(s) in {len(outcomes)} package(s)"
        )
        next_steps = [
            "Add a migration to a package: dbinit new-migration PACKAGE -m 'describe it'",
            f"Apply new migrations: dbinit init {plan.environment}",
        ]
    return {
        "status": "success",
        "operation": OPERATION,
        "result": result,
        "message": message,
        "next_steps": next_steps,
    }


def template_result(verified: Verified) -> dict[str, dict[str, Any]]:
    """How templates took part: `used` (cloned, replayed and why, or unavailable) and `kept`."""
    found: dict[str, dict[str, Any]] = {}
    use = verified.packages.database.template
    if use is not None:
        found["used"] = use.as_dict()
    if verified.template_kept is not None:
        found["kept"] = verified.template_kept
    return found


def error_response(
    error: DbinitError,
    *,
    stage: str,
    plan: InitPlan | None = None,
    environment: str | None = None,
    run_id: str = "",
    cleanup: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The error response: which stage failed, why, and what to do."""
    response: dict[str, Any] = {
        "status": "error",
        "operation": OPERATION,
        "stage": stage,
        "error": redact(error.message),
        "code": str(error.code),  # the plain string: responses are JSON and Dagster metadata
        "transient": error.transient,
        "recovery": {"suggestions": [redact(s) for s in error.suggestions]},
        "environment": plan.environment if plan else environment,
        "database_name": plan.database_name if plan else None,
        "run_id": run_id,
        "timestamp": _now(),
    }
    if error.details:
        response["details"] = {
            k: redact(str(v)) if isinstance(v, str) else v  # str(): an ErrorCode becomes its plain value
            for k, v in error.details.items()
        }
    if cleanup:
        response["cleanup"] = cleanup
    return response
