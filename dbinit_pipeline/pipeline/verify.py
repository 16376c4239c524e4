"""Stage 7, verify: the live schema matches what the core and packages declare, and it is healthy."""

from typing import Any

from dbinit_pipeline.configuration import LoadedConfig
from dbinit_pipeline.database.server import DatabaseServer
from dbinit_pipeline.errors import ErrorCode, VerificationError
from dbinit_pipeline.migrations.loading import registry_for
from dbinit_pipeline.pipeline.results import PackagesApplied, Verified
from dbinit_pipeline.pipeline.template_use import keep_after_verify
from dbinit_pipeline.verify.health import verify_database


def cloud_checks(config: LoadedConfig, environment: str, hosting: str) -> dict[str, dict[str, Any]] | None:
    """Checks only the cloud can answer: a cloud server's disk comes from its monitoring API."""
    if hosting in ("gcp-sql", "azure-sql"):
        from dbinit_pipeline.infrastructure.cloud import cloud_disk_space

        return {"disk": cloud_disk_space(config, environment, hosting)}
    if hosting not in ("aws-rds", "aws-aurora"):
        return None
    from dbinit_pipeline.infrastructure.aws import aws_disk_space

    return {"disk": aws_disk_space(config, environment)}


def verify_applied(config: LoadedConfig, applied: PackagesApplied) -> Verified:
    """Verify the database; drift or an unhealthy check is a permanent failure."""
    plan = applied.plan
    if plan.dry_run:
        return Verified(applied, {"status": "skipped"}, {"status": "skipped"}, "skipped")
    packages = registry_for(config, plan.run_id).ordered()
    outcome = verify_database(
        DatabaseServer(applied.database.server),
        plan.database_name,
        packages,
        config.model.health,
        run_id=plan.run_id,
        snapshot=True,
        extra_checks=cloud_checks(config, plan.environment, plan.hosting),
    )
    if outcome.schema["status"] != "ok" or outcome.status == "unhealthy":
        failing = [
            name
            for name, check in outcome.health.items()
            if isinstance(check, dict) and check.get("status") == "unhealthy"
        ]
        raise VerificationError(
            f"Database {plan.database_name} failed verification: "
            + ("; ".join(outcome.schema["drift"][:20]) or f"unhealthy checks: {', '.join(failing)}"),
            code=ErrorCode.SCHEMA_DRIFT if outcome.schema["drift"] else ErrorCode.UNHEALTHY,
            details={"schema": outcome.schema, "health": outcome.health},
            suggestions=[
                f"Inspect it: dbinit health {plan.environment}",
                "A table dropped or altered by hand: restore it, or recreate a throw-away database "
                "with --if-exists recreate.",
            ],
        )
    # Still under the run lock: a database this run replayed from empty may become a template.
    kept = keep_after_verify(config, applied.database)
    return Verified(applied, outcome.schema, outcome.health, outcome.status, template_kept=kept)
