"""The bare Dagster job: eight empty ops in a chain, in-process executor.

What Dagster itself costs for a job shaped like `initialize_<env>` (`dagster job execute -f
bench/bare_job.py -j bare_job`): the baseline the dbinit job is compared with.
"""

from __future__ import annotations

from dagster import in_process_executor, job, op


@op
def step1() -> int:
    return 1


@op
def step2(previous: int) -> int:
    return previous + 1


@op
def step3(previous: int) -> int:
    return previous + 1


@op
def step4(previous: int) -> int:
    return previous + 1


@op
def step5(previous: int) -> int:
    return previous + 1


@op
def step6(previous: int) -> int:
    return previous + 1


@op
def step7(previous: int) -> int:
    return previous + 1


@op
def step8(previous: int) -> int:
    return previous + 1


@job(executor_def=in_process_executor)
def bare_job() -> None:
    """step1 -> step2 -> ... -> step8, each op taking the previous op's result like the real job."""
    step8(step7(step6(step5(step4(step3(step2(step1())))))))
