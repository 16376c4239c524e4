"""The one place where errors become Dagster retries or permanent failures.

Transient faults are re-raised for the op's RetryPolicy (exponential backoff with jitter);
everything else, and a transient fault on the last attempt, becomes the seed's error response:
appended to the operation log, attached to the failure event, and raised as
`Failure(allow_retries=False)`. Before that, still under the run lock, a database this run
created is dropped again (never on a protected environment, never one that existed before);
then the run lock is released. The response says what was cleaned up or kept, and why.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

from dagster import (
    Backoff,
    DagsterExecutionInterruptedError,
    Failure,
    Jitter,
    MetadataValue,
    OpExecutionContext,
    RetryPolicy,
)

from dbinit_pipeline.errors import DbinitError, ErrorCode, classify
from dbinit_pipeline.orchestration.resources import OperationLog
from dbinit_pipeline.pipeline.cleanup import cleanup_after_failure
from dbinit_pipeline.pipeline.responses import error_response
from dbinit_pipeline.pipeline.results import DatabaseReady, InitPlan
from dbinit_pipeline.redaction import redact_data
from dbinit_pipeline.safety.run_lock import release_run_lock

TRANSIENT_RETRY = RetryPolicy(max_retries=3, delay=0.5, backoff=Backoff.EXPONENTIAL, jitter=Jitter.PLUS_MINUS)
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
    except (KeyboardInterrupt, DagsterExecutionInterruptedError, SystemExit) as exc:
        # SIGINT, SIGTERM (Dagster maps it to SIGINT while a run executes), a terminate from the
        # UI, or sys.exit() outside a migration: the run ends here, once, never retried.
        error = interrupted(exc, stage)
    except Exception as exc:  # every error ends in a response, whatever raised it
        error = classify(exc, during=stage.replace("_", " "))
        attempt = context.retry_number + 1
        if error.transient and context.retry_number < TRANSIENT_RETRY.max_retries:
            context.log.warning(f"{stage}: {error.message} (attempt {attempt}); retrying")
            raise error from None
    fail(context, stage, oplog, error, plan=plan, environment=environment, database=database)


def interrupted(exc: BaseException, stage: str) -> DbinitError:
    """The error of a run stopped from outside (a signal, a terminate, sys.exit)."""
    if isinstance(exc, SystemExit):
        what = f"sys.exit({exc.code!r}) was called"
    elif isinstance(exc, KeyboardInterrupt):
        what = "the process received SIGINT or SIGTERM"
    else:
        what = "the run was terminated (from the UI, or by SIGINT/SIGTERM)"
    return DbinitError(
        f"The run was stopped during {stage.replace('_', ' ')}: {what}",
        code=ErrorCode.CANCELLED,
        suggestions=[
            "What this stage had begun was rolled back where the server allows it (PostgreSQL); "
            "see cleanup for the database.",
            "Launch a new run when you want to continue.",
        ],
    )


def fail(
    context: OpExecutionContext,
    stage: str,
    oplog: OperationLog,
    error: DbinitError,
    *,
    plan: InitPlan | None,
    environment: str | None,
    database: DatabaseReady | None,
) -> NoReturn:
    """Clean up, release the lock, record the response, and end the step without retries."""
    cleanup = cleanup_after_failure(stage, database)
    if release_run_lock(context.run_id):
        cleanup["lock"] = "released"
    response: dict[str, Any] = redact_data(
        error_response(
            error,
            stage=stage,
            plan=plan,
            environment=environment,
            run_id=context.run_id,
            cleanup=cleanup,
        )
    )
    for problem in oplog.append(response):
        context.log.warning(problem)
    context.log.error(f"{stage} failed: {error.message}")
    raise Failure(
        description=error.message,
        metadata={
            "response": MetadataValue.json(response),
            "code": str(error.code),
            "stage": stage,
            "suggestions": MetadataValue.text("\n".join(error.suggestions)),
        },
        allow_retries=False,
    ) from None
