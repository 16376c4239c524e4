"""Progress of long applies, reported through the run's log."""

from __future__ import annotations

from dagster import OpExecutionContext

from dbinit_pipeline.schema.runner import Progress


def progress_logger(context: OpExecutionContext, stage: str) -> Progress:
    """Log each finished package and every 100th migration."""
    last = {"package": ""}

    def report(package: str, done: int, total: int) -> None:
        if package != last["package"] or done == total or done % 100 == 0:
            context.log.info(f"{stage}: {package} ({done}/{total} migrations)")
            last["package"] = package

    return report
