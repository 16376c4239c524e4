"""After a failed stage: drop the database if this run created it and may drop it, and say why."""

from __future__ import annotations

from typing import Any

from dbinit_pipeline.database.server import DatabaseServer
from dbinit_pipeline.errors import classify
from dbinit_pipeline.pipeline.results import DatabaseReady

_BEFORE_CREATE = ("validate", "approve", "provision")


def cleanup_after_failure(stage: str, database: DatabaseReady | None) -> dict[str, Any]:
    """Drop the database if this run created it and may drop it; say what happened and why."""
    if database is None:
        if stage in _BEFORE_CREATE:
            reason = f"the run stopped at {stage}, before the create stage: no database was touched"
        else:
            reason = f"{stage} failed before the database was ready: this run created nothing to drop"
        return {"database": "untouched", "reason": reason}
    plan = database.plan
    name = plan.database_name
    if plan.dry_run:
        return {"database": "untouched", "name": name, "reason": "a dry run changes nothing"}
    if database.action != "created":
        return {
            "database": "kept",
            "name": name,
            "reason": "it existed before this run"
            + (" (recreated by if_exists: recreate)" if database.action == "recreated" else "")
            + ": a database that existed before is never dropped",
        }
    if plan.protected:
        return {
            "database": "kept",
            "name": name,
            "reason": f"this run created it, but {plan.environment!r} is a protected environment: "
            "nothing is dropped there automatically; a rerun continues where this one stopped",
        }
    server = DatabaseServer(database.server)
    try:
        with server.connect(autocommit=True) as conn:
            server.provider.drop_database(conn, name)
    except Exception as exc:
        return {
            "database": "kept",
            "name": name,
            "reason": f"this run created it and {stage} failed, but dropping it failed: "
            f"{classify(exc).message}; drop it by hand or rerun to finish it",
        }
    return {
        "database": "dropped",
        "name": name,
        "reason": f"this run created it and {stage} failed; the next run creates it afresh "
        "(launch a new run rather than re-executing from failure)",
    }
