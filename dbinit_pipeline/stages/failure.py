"""The one place where errors become Dagster retries or permanent failures.

Transient faults are re-raised for the op's RetryPolicy (exponential backoff with jitter);
everything else, and a transient fault on the last attempt, becomes the seed's error response:
appended to the operation log, attached to the failure event, and raised as
`Failure(allow_retries=False)`. A database this run created is dropped again first, unless the
environment is protected.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

from dagster import Backoff, Failure, Jitter, MetadataValue, OpExecutionContext, RetryPolicy

from dbinit_pipeline.errors import DbinitError, classify
from dbinit_pipeline.resources.database_server import DatabaseServer
from dbinit_pipeline.resources.operation_log import OperationLog
from dbinit_pipeline.responses import error_response
from dbinit_pipeline.stages.results import DatabaseReady, InitPlan

TRANSIENT_RETRY = RetryPolicy(max_retries=3, delay=0.5, backoff=Backoff.EXPONENTIAL, jitter=Jitter.PLUS_MINUS)


def cleanup_created_database(database: DatabaseReady) -> dict[str, Any]:
    """Drop a database this run created; never a protected one, never one that existed before."""
    plan = database.plan
    if plan.dry_run or not database.created_by_this_run:
        return {
            "database": "kept",
            "reason": "it existed before this run" if database.existed_before else "nothing was created",
        }
    if database.existed_before and database.action != "recreated":
        return {"database": "kept", "reason": "it existed before this run"}
    if plan.protected:
        return {"database": "kept", "reason": f"environment {plan.environment!r} is protected"}
    server = DatabaseServer(database.server)
    try:
        with server.connect(autocommit=True) as conn:
            server.provider.drop_database(conn, plan.database_name)
    except Exception as exc:
        return {"database": "kept", "reason": f"dropping it failed: {classify(exc).message}"}
    return {"database": "dropped", "reason": "this run created it and a later stage failed"}


T = TypeVar("T")


def run_stage(
    context: OpExecutionContext,
    stage: str,
    oplog: OperationLog,
    work: Callable[[], T],
    *,
    plan: InitPlan | None = None,
    environment: str | None = None,
    database: DatabaseReady | None = None,
) -> T:
    """Run a stage's work; turn whatever it raises into a retry or a structured failure."""
    try:
        return work()
    except Failure:
        raise
    except Exception as exc:  # every error ends in a response, whatever raised it
        error: DbinitError = classify(exc, during=stage.replace("_", " "))
        attempt = context.retry_number + 1
        if error.transient and context.retry_number < TRANSIENT_RETRY.max_retries:
            context.log.warning(f"{stage}: {error.message} (attempt {attempt}); retrying")
            raise error from None
        cleanup = cleanup_created_database(database) if database is not None else None
        response = error_response(
            error,
            stage=stage,
            plan=plan,
            environment=environment,
            run_id=context.run_id,
            cleanup=cleanup,
        )
        oplog.append(response)
        context.log.error(f"{stage} failed: {error.message}")
        raise Failure(
            description=error.message,
            metadata={
                "response": MetadataValue.json(response),
                "code": error.code,
                "stage": stage,
                "suggestions": MetadataValue.text("\n".join(error.suggestions)),
            },
            allow_retries=False,
        ) from None


def response_json(response: dict[str, Any]) -> str:
    return json.dumps(response, indent=2, sort_keys=False, default=str)
