"""Progress of long applies, reported through the run's log."""

from __future__ import annotations

import time

from dagster import OpExecutionContext

from dbinit_pipeline.migrations.runner import Progress

# At most one progress line per tenth of the migrations or per this many seconds, and the last:
# each line is an event-log write, so their number must not grow with the number of packages.
EVERY_S = 2.0


def throttled(emit: Progress, *, every_s: float = EVERY_S) -> Progress:
    """Pass on the first migration, each tenth of the total, the last, and anything `every_s`
    seconds after the previous line; drop the rest."""
    state = {"tenth": -1, "at": float("-inf")}

    def report(package: str, done: int, total: int) -> None:
        tenth = done * 10 // max(total, 1)
        now = time.monotonic()
        if done == total or tenth > state["tenth"] or now - state["at"] >= every_s:
            emit(package, done, total)
            state["tenth"], state["at"] = tenth, now

    return report


def progress_logger(context: OpExecutionContext, stage: str) -> Progress:
    """Log the apply's progress: the package being applied and how many migrations are done."""
    return throttled(
        lambda package, done, total: context.log.info(f"{stage}: {package} ({done}/{total} migrations)")
    )
