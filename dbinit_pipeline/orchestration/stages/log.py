"""Stage 8, log: append the operation record and return the final response."""

from typing import Any

from dagster import MetadataValue, OpExecutionContext, op

from dbinit_pipeline.orchestration.resources import OperationLog
from dbinit_pipeline.pipeline.responses import success_response
from dbinit_pipeline.pipeline.results import Verified


@op
def log(context: OpExecutionContext, verified: Verified, operation_log: OperationLog) -> dict[str, Any]:
    """Record the run in the operation log; the response is the job's result."""
    response = success_response(verified, run_id=context.run_id)
    for problem in operation_log.append(response):
        context.log.warning(problem)
    context.add_output_metadata({"response": MetadataValue.json(response)})
    context.log.info(f"log: {response['message']}")
    return response
