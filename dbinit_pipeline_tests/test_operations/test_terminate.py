"""Terminate from the UI (issue 13, point 7): a run stopped while its migration is stuck ends
with cleanup and an operation-log record, and its run lock is released at once."""

from __future__ import annotations

import json
import time

from dbinit_pipeline.database.providers import provider_for
from dbinit_pipeline.safety.run_lock import lock_name
from dbinit_pipeline_tests.conftest import PgServer
from dbinit_pipeline_tests.test_operations.conftest import DagsterStack

TERMINATE_MUTATION = """
mutation Terminate($runId: String!) {
  terminateRun(runId: $runId) {
    __typename
    ... on TerminateRunFailure { message }
    ... on PythonError { message }
  }
}
"""
DATABASE = "ops_slow_terminated"  # "slow" in the name: the package's migration sleeps


def _wait_for_sleep(server: PgServer, stack: DagsterStack, run_id: str) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        with server.connect() as conn:
            row = conn.execute(
                "SELECT 1 FROM pg_stat_activity WHERE datname = %s AND query LIKE 'SELECT pg_sleep%%'",
                (DATABASE,),
            ).fetchone()
        if row:
            return
        assert stack.run(run_id)["status"] not in {"SUCCESS", "FAILURE", "CANCELED"}, stack.log_tail()
        time.sleep(0.2)
    raise AssertionError(f"the run never reached its migration\n{stack.log_tail()}")


def _run_lock_held(server: PgServer) -> bool:
    key = provider_for("postgresql").lock_key(lock_name(DATABASE))
    with server.connect("postgres") as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = %s AND granted",
            (key,),
        ).fetchone()
    return bool(row and row[0])


def test_terminating_a_stuck_run_from_the_ui_releases_its_lock_and_records_it(
    dagster_stack: DagsterStack, embedded_pg: PgServer
) -> None:
    run_id = dagster_stack.launch(
        "initialize_beta", {"ops": {"validate": {"config": {"database_name": DATABASE}}}}
    )
    _wait_for_sleep(embedded_pg, dagster_stack, run_id)
    assert _run_lock_held(embedded_pg), "the run holds its lock while its migration runs"
    answer = dagster_stack.graphql(TERMINATE_MUTATION, {"runId": run_id})["terminateRun"]
    assert answer["__typename"] == "TerminateRunSuccess", answer
    run = dagster_stack.wait_finished(run_id, timeout=60)
    assert run["status"] in {"CANCELED", "FAILURE"}, run
    assert not _run_lock_held(embedded_pg), "the lock of a terminated run is released"
    records = [
        json.loads(line)
        for line in (dagster_stack.root / ".dbinit" / "operations.jsonl").read_text().splitlines()
        if run_id in line
    ]
    assert [r["code"] for r in records] == ["cancelled"], records
    assert records[0]["stage"] == "package_schemas"
    assert records[0]["cleanup"]["database"] == "dropped", records[0]
    assert not embedded_pg.database_exists(DATABASE)
